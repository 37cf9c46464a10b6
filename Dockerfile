# The service as a container image: SDK stage publishes, ASP.NET runtime stage runs it as a non-root user.
#   docker build -t realtime-chat-service .
#   docker run -p 8086:8086 -v chat-data:/data realtime-chat-service        # then open http://localhost:8086
# scripts/docker-publish-check.sh replays this file's COPY and `dotnet` steps without Docker (CI has no container runtime).

FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
WORKDIR /src
# Restore first, from the project files alone, so the layer survives source-only changes.
COPY Directory.Build.props Directory.Packages.props ./
COPY src/RealtimeChat/RealtimeChat.csproj src/RealtimeChat/
RUN dotnet restore src/RealtimeChat/RealtimeChat.csproj
COPY src/RealtimeChat/ src/RealtimeChat/
RUN dotnet publish src/RealtimeChat/RealtimeChat.csproj -c Release --no-restore -p:UseAppHost=false -warnaserror -o /app

FROM mcr.microsoft.com/dotnet/aspnet:10.0 AS runtime
WORKDIR /app
COPY --from=build /app ./
# SQLite file, generated keys and local media live in /data; mount a volume there (or use PostgreSQL and S3).
RUN mkdir /data && chown app:app /data
VOLUME /data
ENV urls=http://0.0.0.0:8086 \
    Storage__DataDirectory=/data \
    Database__ConnectionString="Data Source=/data/chat.db" \
    Media__LocalDirectory=/data/media \
    DOTNET_CLI_TELEMETRY_OPTOUT=1
EXPOSE 8086
# The image's unprivileged user (uid 1654).
USER app
# The runtime image has no curl or wget; bash's /dev/tcp is enough to ask /health/live for its status line.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8086 && printf 'GET /health/live HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["dotnet", "RealtimeChat.dll"]
