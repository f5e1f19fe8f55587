import Foundation
import HotSpare
import Testing

/// `smartctl --json` output, recorded (see SmartSamples/README.md), read into wear counters.
@Suite("SMART wear: smartctl --json read into host and media bytes")
struct SmartWearTests {
    static func sample(_ name: String) throws -> [UInt8] {
        let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "SmartSamples")
        return [UInt8](try Data(contentsOf: directory.appendingPathComponent(name)))
    }

    @Test("a SATA SSD's host and TLC writes in 32 MiB units give its write amplification")
    func sataSSD() throws {
        let reading = try SmartReading.parse(smartctlJSON: try Self.sample("ata-intel-ssd-smartctl.json"))
        #expect(reading.deviceProtocol == "ATA")
        #expect(reading.hostBytesWritten == 108_044 << 25)
        #expect(reading.mediaBytesWritten == 347_308 << 25)
        let amplification = try #require(reading.writeAmplification)
        #expect(abs(amplification - 347_308.0 / 108_044.0) < 1e-9)
    }

    @Test(
        "NVMe: host bytes from data units of 512,000 bytes; no media counter in the standard log",
        arguments: [
            ("nvme-intel-ssdpeknw010t8-smartctl-7.1.json", UInt64(7_773_431), "INTEL SSDPEKNW010T8", 0),
            ("nvme-samsung-980pro-smartctl-7.4.json", UInt64(396_270_860), "Samsung SSD 980 PRO 1TB", 30),
        ])
    func nvme(_ file: String, _ units: UInt64, _ model: String, _ used: Int) throws {
        let reading = try SmartReading.parse(smartctlJSON: try Self.sample(file))
        #expect(reading.deviceProtocol == "NVMe")
        #expect(reading.model == model)
        #expect(reading.hostBytesWritten == units * 512_000)
        #expect(reading.mediaBytesWritten == nil)
        #expect(reading.writeAmplification == nil)
        #expect(reading.percentageUsed == used)
    }

    @Test("NVMe media bytes from the OCP SMART log (nvme-cli's JSON): the reading gains a write amplification")
    func ocpLog() throws {
        let log = try Self.sample("nvme-ocp-smart-add-log.json")
        #expect(try SmartReading.mediaBytes(ocpLogJSON: log) == 527_805_403_860_992)
        let reading = try SmartReading.parse(smartctlJSON: try Self.sample("nvme-samsung-980pro-smartctl-7.4.json"))
        let combined = try reading.addingMediaBytes(ocpLogJSON: log)
        #expect(combined.mediaBytesWritten == 527_805_403_860_992)
        #expect(combined.hostBytesWritten == reading.hostBytesWritten)
        let amplification = try #require(combined.writeAmplification)
        #expect(abs(amplification - 527_805_403_860_992.0 / Double(396_270_860 * 512_000)) < 1e-12)
        for (text, code) in [
            ("{\"Physical media units written\": {\"hi\": 1, \"lo\": 0}}", SmartParseError.Code.outOfRange),
            ("{\"Physical media units read\": {\"hi\": 0, \"lo\": 5}}", .notSmartctl),
            ("{\"Physical media units written\": 7}", .notSmartctl),
            ("[", .notJSON),
        ] {
            #expect {
                try SmartReading.mediaBytes(ocpLogJSON: Array(text.utf8))
            } throws: { error in
                (error as? SmartParseError)?.code == code
            }
        }
    }

    @Test("a device smartctl cannot identify is an error carrying smartctl's message")
    func unidentifiedDevice() throws {
        #expect {
            try SmartReading.parse(smartctlJSON: try Self.sample("virtio-disk-smartctl-7.3.json"))
        } throws: { error in
            guard let error = error as? SmartParseError else { return false }
            return error.code == .smartctlFailed && error.detail.contains("Unable to detect device type")
                && error.detail.contains("exit status 1")
        }
    }

    @Test("Micron page counts: media is host plus FTL pages; Total_LBAs_Written counts logical blocks")
    func pageCountsAndLBAs() throws {
        let micron = """
            {"smartctl": {"exit_status": 0}, "device": {"protocol": "ATA"}, "logical_block_size": 4096,
             "ata_smart_attributes": {"table": [
               {"id": 246, "name": "Total_LBAs_Written", "raw": {"value": 1000}},
               {"id": 247, "name": "Host_Program_Page_Count", "raw": {"value": 300}},
               {"id": 248, "name": "FTL_Program_Page_Count", "raw": {"value": 600}}]}}
            """
        let reading = try SmartReading.parse(smartctlJSON: Array(micron.utf8))
        #expect(reading.hostBytesWritten == 300 * 16384)
        #expect(reading.writeAmplification == 3)
        let lbas = """
            {"smartctl": {}, "device": {"protocol": "ATA"}, "logical_block_size": 4096,
             "ata_smart_attributes": {"table": [{"id": 241, "name": "Total_LBAs_Written", "raw": {"value": 1000}}]}}
            """
        let plain = try SmartReading.parse(smartctlJSON: Array(lbas.utf8))
        #expect(plain.hostBytesWritten == 4_096_000)
        #expect(plain.mediaBytesWritten == nil)
    }

    @Test(
        "hostile or foreign bytes are typed errors, never a crash or a made-up figure",
        arguments: [
            ("", SmartParseError.Code.notJSON),
            ("{not json", .notJSON),
            ("[1, 2]", .notSmartctl),
            ("{\"device\": {\"protocol\": \"ATA\"}}", .notSmartctl),
            ("{\"smartctl\": {\"exit_status\": \"x\"}}", .notSmartctl),
            ("{\"smartctl\": {}, \"device\": {\"protocol\": \"ATA\"}}", .noHostWrites),
            (
                "{\"smartctl\": {}, \"device\": {\"protocol\": \"NVMe\"}, \"nvme_smart_health_information_log\": {}}",
                .noHostWrites
            ),
            (
                "{\"smartctl\": {}, \"device\": {\"protocol\": \"NVMe\"}, "
                    + "\"nvme_smart_health_information_log\": {\"data_units_written\": 18446744073709551615}}",
                .outOfRange
            ),
            (
                "{\"smartctl\": {}, \"device\": {\"protocol\": \"NVMe\"}, "
                    + "\"nvme_smart_health_information_log\": {\"data_units_written\": -5}}", .notSmartctl
            ),
            (
                "{\"smartctl\": {}, \"device\": {\"protocol\": \"ATA\"}, \"ata_smart_attributes\": {\"table\": "
                    + "[{\"name\": \"Host_Writes_32MiB\", \"raw\": {\"value\": true}}]}}", .notSmartctl
            ),
        ])
    func hostileInput(_ text: String, _ code: SmartParseError.Code) {
        #expect {
            try SmartReading.parse(smartctlJSON: Array(text.utf8))
        } throws: { error in
            (error as? SmartParseError)?.code == code
        }
    }

    @Test("SmartctlWearSource runs the real smartctl when it is installed; an unreadable device gives nil")
    func realSmartctl() throws {
        let executable = "/usr/sbin/smartctl"
        guard FileManager.default.isExecutableFile(atPath: executable) else { return }
        let source = SmartctlWearSource(device: "/dev/null", executable: executable)
        #expect(source.wearCounts() == nil)
        #expect(throws: SmartParseError.self) { try source.read() }
    }
}
