using System.IdentityModel.Tokens.Jwt;
using System.Security.Claims;
using Microsoft.IdentityModel.Tokens;

namespace RealtimeChat.Identity;

public static class DevelopmentTokens
{
    public static string Mint(byte[] signingKey, Guid userId, TimeSpan lifetime, AuthOptions auth, string? name = null)
    {
        var claims = new List<Claim> { new(JwtRegisteredClaimNames.Sub, userId.ToString()) };
        if (name is not null)
        {
            claims.Add(new Claim(JwtRegisteredClaimNames.Name, name));
        }
        var token = new JwtSecurityToken(
            issuer: auth.Issuer,
            audience: auth.Audience,
            claims: claims,
            notBefore: DateTime.UtcNow.AddSeconds(-5),
            expires: DateTime.UtcNow.Add(lifetime),
            signingCredentials: new SigningCredentials(new SymmetricSecurityKey(signingKey), SecurityAlgorithms.HmacSha256));
        return new JwtSecurityTokenHandler().WriteToken(token);
    }
}
