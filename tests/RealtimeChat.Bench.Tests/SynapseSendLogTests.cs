using RealtimeChat.Bench;

namespace RealtimeChat.Bench.Tests;

public sealed class SynapseSendLogTests
{
    // Two of Synapse 1.67's access log lines for an appservice's PUT /send (one before, one after midnight).
    private const string BeforeMidnight = """2026-12-01 23:59:59,900 - synapse.access.http.41203 - 450 - INFO - PUT-86 - 127.0.0.1 - 41203 - {@nova_3df5:localhost} Processed request: 0.148sec/0.001sec (0.004sec, 0.000sec) (0.032sec/0.013sec/6) 59B 200 "PUT /_matrix/client/v3/rooms/%21BDIp%3Alocalhost/send/m.room.message/nova.1.send_message?ts=1796168868061&user_id=%40nova_3df5%3Alocalhost HTTP/1.1" "-" [0 dbevts]""";
    private const string AfterMidnight = """2026-12-02 00:00:00,200 - synapse.access.http.41203 - 450 - INFO - PUT-87 - 127.0.0.1 - 41203 - {@nova_3df5:localhost} Processed request: 0.150sec/0.001sec (0.005sec, 0.001sec) (0.026sec/0.013sec/6) 59B 200 "PUT /_matrix/client/v3/rooms/%21BDIp%3Alocalhost/send/m.room.message/nova.2.send_message?ts=1796168868062&user_id=%40nova_3df5%3Alocalhost HTTP/1.1" "-" [0 dbevts]""";

    [Fact]
    public async Task A_phase_across_midnight_counts_the_sends_in_the_rotated_log_too()
    {
        var directory = Directory.CreateTempSubdirectory("synapse-log-").FullName;
        try
        {
            // Synapse's default log configuration rotates homeserver.log at midnight into homeserver.log.<date>.
            await File.WriteAllTextAsync(Path.Combine(directory, "homeserver.log.2026-12-01"), BeforeMidnight + "\n");
            await File.WriteAllTextAsync(Path.Combine(directory, "homeserver.log"), AfterMidnight + "\n");

            var log = SynapseSendLog.Read(Path.Combine(directory, "homeserver.log"));
            var figures = log.Between([(DateTime.MinValue, DateTime.MaxValue)], "@nova_");

            Assert.Equal(2, figures.Sends);
            // The room waited from the end of the first send (23:59:59.900) to the start of the second (00:00:00.050).
            Assert.Equal(150, figures.GapMs, precision: 3);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public async Task A_phase_run_in_rounds_pools_its_windows_and_counts_no_gap_between_them()
    {
        var directory = Directory.CreateTempSubdirectory("synapse-log-").FullName;
        try
        {
            // One room, two sends in each of two rounds of a phase; the other phases ran between them.
            string Line(string end, double seconds) =>
                $"2026-12-02 {end} - synapse.access.http.41203 - 450 - INFO - PUT-86 - 127.0.0.1 - 41203 - {{@nova_3df5:localhost}} Processed request: {seconds:0.000}sec/0.001sec (0.004sec, 0.000sec) (0.032sec/0.013sec/6) 59B 200 \"PUT /_matrix/client/v3/rooms/%21BDIp%3Alocalhost/send/m.room.message/nova.1.send_message?user_id=%40nova_3df5%3Alocalhost HTTP/1.1\" \"-\" [0 dbevts]";
            await File.WriteAllLinesAsync(Path.Combine(directory, "homeserver.log"),
                [Line("10:00:00,000", 0.1), Line("10:00:01,000", 0.1), Line("10:00:10,000", 0.1), Line("10:00:12,000", 0.1)]);
            static DateTime At(string time) => DateTime.Parse($"2026-12-02 {time}", System.Globalization.CultureInfo.InvariantCulture, System.Globalization.DateTimeStyles.AssumeLocal).ToUniversalTime();

            var figures = SynapseSendLog.Read(Path.Combine(directory, "homeserver.log"))
                .Between([(At("09:59:59"), At("10:00:02")), (At("10:00:09"), At("10:00:13"))], "@nova_");

            Assert.Equal(4, figures.Sends);
            // One send after the first in each window, over 1 s and 2 s of those windows: not 3 sends over 12 s.
            Assert.Equal(2 / 3.0, figures.PerSecond, precision: 6);
            Assert.Equal(100, figures.RequestMs, precision: 3);
            // 900 ms and 1,900 ms within the windows; the 8,900 ms between them was the other phases' time.
            Assert.Equal(1400, figures.GapMs, precision: 3);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}
