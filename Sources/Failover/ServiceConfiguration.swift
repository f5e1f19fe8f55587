import FaultToleranceCore
public import NIOCore

/// What the operating server serves with: its role, the address clients reach it at, and
/// the settings the application registered. Replicated to the backup with the data; on
/// promotion the backup adopts it (the seed's "preset first configuration": the one the
/// operating server had while serving) and binds the same address.
///
/// ```swift
/// var configuration = ServiceConfiguration(role: .primary, epoch: 1, host: "127.0.0.1", port: 7400)
/// configuration.settings["max-connections"] = "512"
/// try configuration.validate()
/// ```
public struct ServiceConfiguration: Sendable, Hashable {
    /// The longest host, setting name or setting value, in UTF-8 bytes.
    public static let maximumStringLength = 255
    /// The most settings.
    public static let maximumSettings = 256

    /// A server's part in the pair.
    public enum Role: UInt8, Sendable, Hashable, CustomStringConvertible {
        /// Serves clients and replicates to the backups.
        case primary = 1
        /// Applies the primary's log; serves nothing.
        case backup = 2
        /// A former primary told to step down (or whose lease lapsed): serves nothing until it
        /// rejoins as a backup.
        case steppedDown = 3

        /// The value as people read it.
        public var description: String {
            switch self {
            case .primary: "primary"
            case .backup: "backup"
            case .steppedDown: "stepped-down"
            }
        }
    }

    /// The role of the server that holds this configuration.
    public var role: Role
    /// The epoch the role belongs to.
    public var epoch: UInt64
    /// The service address clients connect to (a host name or an IP address).
    public var host: String
    /// The service port.
    public var port: UInt16
    /// Application settings, by name.
    public var settings: [String: String]

    /// Creates a configuration.
    public init(role: Role, epoch: UInt64, host: String, port: UInt16, settings: [String: String] = [:]) {
        self.role = role
        self.epoch = epoch
        self.host = host
        self.port = port
        self.settings = settings
    }

    /// The configuration a promoted backup serves with: this one, as primary of `epoch`.
    public func adopted(epoch: UInt64) -> ServiceConfiguration {
        var copy = self
        copy.role = .primary
        copy.epoch = epoch
        return copy
    }

    /// Throws ``FailoverError/Code/tooLarge`` or ``FailoverError/Code/invalidConfiguration``
    /// when a field breaks a limit: an empty host, a string over ``maximumStringLength`` bytes,
    /// more than ``maximumSettings`` settings.
    public func validate() throws(FailoverError) {
        guard !host.isEmpty else { throw FailoverError(.invalidConfiguration, detail: "empty service host") }
        guard host.utf8.count <= Self.maximumStringLength else {
            throw FailoverError(.tooLarge, detail: "service host of \(host.utf8.count) bytes")
        }
        guard settings.count <= Self.maximumSettings else {
            throw FailoverError(.tooLarge, detail: "\(settings.count) settings, at most \(Self.maximumSettings)")
        }
        for (name, value) in settings {
            guard !name.isEmpty, name.utf8.count <= Self.maximumStringLength,
                value.utf8.count <= Self.maximumStringLength
            else { throw FailoverError(.tooLarge, detail: "setting \(name.prefix(32)) out of bounds") }
        }
    }

    /// Appends the configuration's encoding: role, epoch, host, port, then the settings in
    /// name order (so equal configurations encode to equal bytes). Little-endian; strings as
    /// one length byte and UTF-8.
    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeMultipleIntegers(role.rawValue, epoch, port, endianness: .little)
        writeShortString(host, into: &buffer)
        let names = settings.keys.sorted().prefix(Self.maximumSettings)
        buffer.writeInteger(UInt16(names.count), endianness: .little)
        for name in names {
            writeShortString(name, into: &buffer)
            writeShortString(settings[name] ?? "", into: &buffer)
        }
    }

    /// Decodes a configuration from the front of `buffer`, throwing
    /// ``FailoverError/Code/malformed`` for anything but a valid encoding.
    public static func decode(from buffer: inout ByteBuffer) throws(FailoverError) -> ServiceConfiguration {
        guard
            let (roleByte, epoch, port) = buffer.readMultipleIntegers(
                endianness: .little, as: (UInt8, UInt64, UInt16).self),
            let role = Role(rawValue: roleByte)
        else { throw FailoverError(.malformed, detail: "configuration header invalid") }
        let host = try readShortString(from: &buffer, what: "service host")
        guard !host.isEmpty else { throw FailoverError(.malformed, detail: "empty service host") }
        guard let count = buffer.readInteger(endianness: .little, as: UInt16.self), Int(count) <= maximumSettings
        else { throw FailoverError(.malformed, detail: "settings count invalid") }
        var settings: [String: String] = [:]
        var previous: String?
        for _ in 0..<count {
            let name = try readShortString(from: &buffer, what: "setting name")
            let value = try readShortString(from: &buffer, what: "setting value")
            // Names are written sorted and unique: anything else is not our encoding.
            guard !name.isEmpty, previous.map({ $0 < name }) ?? true else {
                throw FailoverError(.malformed, detail: "setting names not in order")
            }
            previous = name
            settings[name] = value
        }
        return ServiceConfiguration(role: role, epoch: epoch, host: host, port: port, settings: settings)
    }

    /// The configuration alone, framed (message type 0x0620) with its version and CRC32C: the
    /// form a server keeps on disk.
    public func framed() -> ByteBuffer {
        var payload = ByteBuffer()
        payload.writeInteger(Self.formatVersion)
        encode(into: &payload)
        return Frame(type: Self.frameType, payload: payload).encoded()
    }

    /// Decodes what ``framed()`` wrote, checking the frame's checksum and the format version.
    public static func unframe(_ bytes: ByteBuffer) throws(FailoverError) -> ServiceConfiguration {
        let frames: [Frame]
        do {
            frames = try FrameDecoder.decodeAll(bytes, maximumPayloadLength: 1 << 20)
        } catch {
            throw FailoverError(.malformed, detail: "configuration frame: \(error)")
        }
        guard frames.count == 1, let frame = frames.first, frame.type == frameType else {
            throw FailoverError(.malformed, detail: "expected one configuration frame")
        }
        var payload = frame.payload
        guard let version = payload.readInteger(as: UInt8.self), version == formatVersion else {
            throw FailoverError(.malformed, detail: "configuration format version unknown")
        }
        let configuration = try decode(from: &payload)
        guard payload.readableBytes == 0 else {
            throw FailoverError(.malformed, detail: "\(payload.readableBytes) bytes after the configuration")
        }
        return configuration
    }

    static let frameType: UInt16 = 0x0620
    static let formatVersion: UInt8 = 1
}

/// One length byte, then UTF-8 (cut at a character boundary to 255 bytes).
func writeShortString(_ string: String, into buffer: inout ByteBuffer) {
    var cut = string
    while cut.utf8.count > 255 { cut.removeLast() }
    buffer.writeInteger(UInt8(cut.utf8.count))
    buffer.writeString(cut)
}

func readShortString(from buffer: inout ByteBuffer, what: String) throws(FailoverError) -> String {
    guard let length = buffer.readInteger(as: UInt8.self), let raw = buffer.readBytes(length: Int(length)),
        let string = String(validating: raw, as: UTF8.self)
    else { throw FailoverError(.malformed, detail: "\(what) invalid") }
    return string
}
