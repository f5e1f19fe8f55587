import Foundation

/// A drive's wear counters as `smartctl --json` reports them: what the host wrote and, where the
/// drive says, what it programmed into its flash, in bytes.
///
/// Where the figures come from:
/// - **ATA/SATA**: the attribute table. Host writes from an attribute named for them
///   (`Total_LBAs_Written` in logical blocks, `Host_Writes_32MiB`, `Host_Writes_GiB`,
///   `Lifetime_Writes_GiB`, Micron's `Host_Program_Page_Count`); media writes from one named for
///   the flash (`NAND_Writes_1GiB`, `NAND_Writes_32MiB`, `Flash_Writes_GiB`, `TLC_Writes_32MiB`
///   plus `SLC_Writes_32MiB` where both are given, or Micron's host plus `FTL_Program_Page_Count`).
///   The unit is read from the name's suffix; page counts are taken as 16 KiB pages, which
///   leaves their ratio (the write amplification) exact.
/// - **NVMe**: the standard health log's `data_units_written` (units of 512,000 bytes) is the
///   host's. The standard log has no media counter: ``mediaBytesWritten`` is `nil` until
///   ``addingMediaBytes(ocpLogJSON:)`` takes it from the drive's OCP cloud SMART log
///   (datacenter drives; nvme-cli's `ocp smart-add-log`).
public struct SmartReading: Sendable, Hashable {
    /// `ATA`, `NVMe` or `SCSI`, as smartctl names it.
    public var deviceProtocol: String
    /// The model, if given.
    public var model: String?
    /// The serial number, if given.
    public var serial: String?
    /// Bytes the host asked the drive to write over its life.
    public var hostBytesWritten: UInt64
    /// Bytes the drive programmed into its media, when it reports them.
    public var mediaBytesWritten: UInt64?
    /// The drive's own estimate of life used, in percent (NVMe), if given.
    public var percentageUsed: Int?

    /// Media over host bytes: the lifetime write amplification, when both are known.
    public var writeAmplification: Double? {
        guard let media = mediaBytesWritten, hostBytesWritten > 0 else { return nil }
        return Double(media) / Double(hostBytesWritten)
    }

    /// Reads `smartctl --json` output (`-a`, `-A` or `-x`).
    ///
    /// Throws ``SmartParseError`` naming what is wrong: not JSON, not smartctl's, smartctl's own
    /// error messages (a device it cannot open or identify), or no host write counter.
    public static func parse(smartctlJSON input: [UInt8]) throws(SmartParseError) -> SmartReading {
        guard input.count <= 16 << 20 else { throw SmartParseError(.notSmartctl, "\(input.count) bytes is too large") }
        let output: SmartctlOutput
        do {
            output = try JSONDecoder().decode(SmartctlOutput.self, from: Data(input))
        } catch {
            // The decoder calls a value that fits no field (-5 for a counter) invalid JSON too.
            guard (try? JSONSerialization.jsonObject(with: Data(input), options: [.fragmentsAllowed])) != nil else {
                throw SmartParseError(.notJSON, "\(input.count) bytes that do not parse as JSON")
            }
            throw SmartParseError(.notSmartctl, "\(error)")
        }
        guard let tool = output.smartctl else { throw SmartParseError(.notSmartctl, "no \"smartctl\" object") }
        guard let deviceProtocol = output.device?.protocol else {
            let messages = (tool.messages ?? []).compactMap(\.string)
            let status = tool.exit_status.map { " (exit status \($0))" } ?? ""
            throw SmartParseError(
                .smartctlFailed,
                (messages.isEmpty ? "no device in the output" : messages.joined(separator: "; ")) + status)
        }
        var reading = SmartReading(
            deviceProtocol: deviceProtocol, model: output.model_name, serial: output.serial_number,
            hostBytesWritten: 0, mediaBytesWritten: nil, percentageUsed: nil)
        if let health = output.nvme_smart_health_information_log {
            guard let units = health.data_units_written else {
                throw SmartParseError(.noHostWrites, "the NVMe health log has no data_units_written")
            }
            reading.hostBytesWritten = try product(units, 512_000, "data_units_written")
            reading.percentageUsed = health.percentage_used.map { Int(clamping: $0) }
            return reading
        }
        guard let table = output.ata_smart_attributes?.table else {
            throw SmartParseError(.noHostWrites, "neither an NVMe health log nor an ATA attribute table")
        }
        let blockSize = output.logical_block_size ?? 512
        var attributes: [String: UInt64] = [:]
        for entry in table {
            guard let name = entry.name, let raw = entry.raw?.value else { continue }
            attributes[name] = raw
        }
        let page: UInt64 = 16 << 10
        func bytes(_ name: String) throws(SmartParseError) -> UInt64? {
            guard let raw = attributes[name] else { return nil }
            let unit: UInt64
            if name == "Total_LBAs_Written" {
                unit = blockSize
            } else if name.hasSuffix("_32MiB") {
                unit = 32 << 20
            } else if name.hasSuffix("_1GiB") || name.hasSuffix("_GiB") {
                unit = 1 << 30
            } else if name.hasSuffix("_Page_Count") {
                unit = page
            } else {
                return nil
            }
            return try product(raw, unit, name)
        }
        let hostNames = [
            "Host_Writes_32MiB", "Host_Writes_GiB", "Lifetime_Writes_GiB", "Total_LBAs_Written",
            "Host_Program_Page_Count",
        ]
        // Micron counts both in pages: take both from there, so the ratio is of like units.
        let micron = attributes["Host_Program_Page_Count"] != nil && attributes["FTL_Program_Page_Count"] != nil
        guard let host = try micron ? bytes("Host_Program_Page_Count") : first(of: hostNames, bytes) else {
            throw SmartParseError(
                .noHostWrites,
                "no host write attribute among \(attributes.count) (\(hostNames.joined(separator: ", ")))")
        }
        reading.hostBytesWritten = host
        let nandNames = ["NAND_Writes_1GiB", "NAND_Writes_32MiB", "NAND_Writes_GiB", "Flash_Writes_GiB"]
        if micron, let ftl = try bytes("FTL_Program_Page_Count") {
            let (sum, overflow) = host.addingReportingOverflow(ftl)
            guard !overflow else { throw SmartParseError(.outOfRange, "host plus FTL pages overflow") }
            reading.mediaBytesWritten = sum
        } else if let nand = try first(of: nandNames, bytes) {
            reading.mediaBytesWritten = nand
        } else if let tlc = try bytes("TLC_Writes_32MiB") {
            let (sum, overflow) = tlc.addingReportingOverflow(try bytes("SLC_Writes_32MiB") ?? 0)
            guard !overflow else { throw SmartParseError(.outOfRange, "TLC plus SLC writes overflow") }
            reading.mediaBytesWritten = sum
        }
        return reading
    }

    /// The media bytes written from an NVMe drive's OCP cloud SMART log (log page 0xC0) as
    /// nvme-cli 2 prints it (`nvme ocp smart-add-log DEVICE -o json`): "Physical media units
    /// written", a 128-bit byte count in `hi` and `lo` halves. Throws ``SmartParseError`` for
    /// bytes that are not that, and ``SmartParseError/Code/outOfRange`` when the count needs
    /// more than 64 bits.
    public static func mediaBytes(ocpLogJSON input: [UInt8]) throws(SmartParseError) -> UInt64 {
        guard input.count <= 1 << 20 else { throw SmartParseError(.notSmartctl, "\(input.count) bytes is too large") }
        let log: OCPSmartLog
        do {
            log = try JSONDecoder().decode(OCPSmartLog.self, from: Data(input))
        } catch {
            guard (try? JSONSerialization.jsonObject(with: Data(input), options: [.fragmentsAllowed])) != nil else {
                throw SmartParseError(.notJSON, "\(input.count) bytes that do not parse as JSON")
            }
            throw SmartParseError(.notSmartctl, "not an OCP SMART log: \(error)")
        }
        guard let written = log.written, let low = written.lo else {
            throw SmartParseError(.notSmartctl, "no \"Physical media units written\" in the OCP SMART log")
        }
        guard (written.hi ?? 0) == 0 else {
            throw SmartParseError(.outOfRange, "physical media units written exceed 64 bits")
        }
        return low
    }

    /// This reading with its media bytes from an OCP SMART log (``mediaBytes(ocpLogJSON:)``):
    /// how an NVMe drive, whose standard log has none, gets a write amplification.
    public func addingMediaBytes(ocpLogJSON input: [UInt8]) throws(SmartParseError) -> SmartReading {
        var reading = self
        reading.mediaBytesWritten = try Self.mediaBytes(ocpLogJSON: input)
        return reading
    }

    private static func first(
        of names: [String], _ bytes: (String) throws(SmartParseError) -> UInt64?
    ) throws(SmartParseError) -> UInt64? {
        for name in names { if let value = try bytes(name) { return value } }
        return nil
    }

    private static func product(_ count: UInt64, _ unit: UInt64, _ name: String) throws(SmartParseError) -> UInt64 {
        let (value, overflow) = count.multipliedReportingOverflow(by: unit)
        guard !overflow else { throw SmartParseError(.outOfRange, "\(name) \(count) x \(unit) bytes overflows") }
        return value
    }
}

/// The part of `smartctl --json` output the parser reads; everything else is ignored. (The
/// property names are smartctl's keys.)
// swift-format-ignore: AlwaysUseLowerCamelCase
private struct SmartctlOutput: Decodable {
    struct Tool: Decodable {
        struct Message: Decodable { var string: String? }
        var messages: [Message]?
        var exit_status: Int?
    }
    struct Device: Decodable { var `protocol`: String? }
    struct Health: Decodable {
        var data_units_written: UInt64?
        var percentage_used: UInt64?
    }
    struct Attributes: Decodable {
        struct Entry: Decodable {
            struct Raw: Decodable { var value: UInt64? }
            var name: String?
            var raw: Raw?
        }
        var table: [Entry]?
    }
    var smartctl: Tool?
    var device: Device?
    var model_name: String?
    var serial_number: String?
    var logical_block_size: UInt64?
    var nvme_smart_health_information_log: Health?
    var ata_smart_attributes: Attributes?
}

/// The field of nvme-cli's OCP SMART log output the parser reads.
private struct OCPSmartLog: Decodable {
    struct Wide: Decodable {
        var hi: UInt64?
        var lo: UInt64?
    }
    var written: Wide?
    enum CodingKeys: String, CodingKey { case written = "Physical media units written" }
}

/// Why `smartctl --json` output gave no reading.
public struct SmartParseError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The kind of problem.
    public enum Code: String, Sendable, Hashable {
        /// The bytes are not JSON.
        case notJSON = "not JSON"
        /// JSON, but not smartctl's.
        case notSmartctl = "not smartctl output"
        /// smartctl could not read the device; its messages are in the detail.
        case smartctlFailed = "smartctl failed"
        /// No counter of host writes the parser knows.
        case noHostWrites = "no host write counter"
        /// A counter times its unit does not fit 64 bits.
        case outOfRange = "counter out of range"
    }

    /// The kind of problem.
    public var code: Code
    /// What exactly.
    public var detail: String

    /// An error.
    public init(_ code: Code, _ detail: String) {
        self.code = code
        self.detail = detail
    }

    /// The code and the detail.
    public var description: String { "\(code.rawValue): \(detail)" }
}

/// A ``WearSource`` that runs `smartctl --json -A` on a device each time it is sampled, and for
/// an NVMe drive also `nvme ocp smart-add-log -o json` (its media bytes) when nvme-cli is there.
///
/// It blocks for as long as the tools run (tens of milliseconds): sample it from the
/// controller's own polls (which run on NIO's thread pool), not from a latency-sensitive task.
/// A drive that reports no media counter gives `nil`, so the monitor does not judge it.
public struct SmartctlWearSource: WearSource {
    /// The device path, e.g. `/dev/sda`.
    public var device: String
    /// The smartctl executable.
    public var executable: String
    /// nvme-cli, for the OCP log of NVMe drives; `nil` not to ask.
    public var nvmeExecutable: String?

    /// A source for `device`.
    public init(device: String, executable: String = "/usr/sbin/smartctl", nvmeExecutable: String? = "/usr/sbin/nvme") {
        self.device = device
        self.executable = executable
        self.nvmeExecutable = nvmeExecutable
    }

    /// Reads the drive now; `nil` if the tools cannot run or the drive has no media counter.
    public func wearCounts() -> (media: UInt64, host: UInt64)? {
        guard let reading = try? read(), let media = reading.mediaBytesWritten else { return nil }
        return (media, reading.hostBytesWritten)
    }

    /// Runs smartctl (and nvme-cli for an NVMe drive) and parses what they print.
    public func read() throws -> SmartReading {
        var reading = try SmartReading.parse(
            smartctlJSON: try Self.output(of: executable, ["--json", "-A", "-i", device]))
        if reading.deviceProtocol == "NVMe", reading.mediaBytesWritten == nil, let nvmeExecutable,
            FileManager.default.isExecutableFile(atPath: nvmeExecutable),
            let log = try? Self.output(of: nvmeExecutable, ["ocp", "smart-add-log", device, "-o", "json"]),
            let withMedia = try? reading.addingMediaBytes(ocpLogJSON: log)
        {
            reading = withMedia
        }
        return reading
    }

    private static func output(of executable: String, _ arguments: [String]) throws -> [UInt8] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return [UInt8](data)
    }
}
