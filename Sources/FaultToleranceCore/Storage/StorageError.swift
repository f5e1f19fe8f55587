#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A storage failure that says what failed and where: the unit, the file, the offset and the
/// operating system's error number.
///
/// Modelled on swift-service-lifecycle's `ServiceGroupError`: a struct with an extensible
/// ``Code`` rather than a closed enum, so new failure kinds do not break callers' `switch`es.
public struct StorageError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The kind of failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }

        /// A read or write outside the unit's capacity, or with a negative offset or count.
        public static let outOfBounds = Code("outOfBounds")
        /// The operating system refused a read or write.
        public static let ioFailed = Code("ioFailed")
        /// A durability barrier (`fdatasync`) failed. The unit is poisoned from then on:
        /// after a failed fsync the kernel may have dropped the dirty pages, so no later
        /// write on it can be trusted to be durable (the PostgreSQL "fsyncgate" lesson).
        public static let synchronizeFailed = Code("synchronizeFailed")
        /// An earlier ``synchronizeFailed`` poisoned the unit; every call now fails.
        public static let poisoned = Code("poisoned")
        /// Allocating the unit would exceed the pool's capacity budget.
        public static let budgetExceeded = Code("budgetExceeded")
        /// The unit is not (or no longer) part of the pool.
        public static let unknownUnit = Code("unknownUnit")
        /// The unit was closed or released and can no longer be used.
        public static let closed = Code("closed")
        /// Creating, opening, sizing or removing a unit's file failed.
        public static let fileOperationFailed = Code("fileOperationFailed")
        /// A file found in a pool directory does not have the shape of a unit.
        public static let malformedUnit = Code("malformedUnit")
        /// The configuration is unusable (no directories, a zero unit size).
        public static let invalidConfiguration = Code("invalidConfiguration")
        /// Another process holds the pool open for writing (the detail names its PID).
        public static let locked = Code("locked")
        /// The pool was opened read-only and the call would change it.
        public static let readOnly = Code("readOnly")
        /// The bytes live on a device that cannot be reached now (a dead chain element, a lost
        /// replica); the detail names it. Never answered with zeros.
        public static let unavailable = Code("unavailable")
        /// The unit belongs to something else (another array, another member): assembling it
        /// would mix foreign data in; the detail names what it belongs to.
        public static let foreignUnit = Code("foreignUnit")

        /// The code's name.
        public var description: String { name }
    }

    /// The kind of failure.
    public var code: Code
    /// The unit involved, when there is one.
    public var unit: UnitID?
    /// The file involved, when there is one.
    public var path: String?
    /// The byte offset involved, when there is one.
    public var offset: Int?
    /// The operating system's `errno`, when a system call failed.
    public var errno: Int32?
    /// More detail for people.
    public var detail: String?

    /// Creates an error.
    public init(
        _ code: Code,
        unit: UnitID? = nil,
        path: String? = nil,
        offset: Int? = nil,
        errno: Int32? = nil,
        detail: String? = nil
    ) {
        self.code = code
        self.unit = unit
        self.path = path
        self.offset = offset
        self.errno = errno
        self.detail = detail
    }

    /// One line naming every known part: code, unit, path, offset, errno, detail.
    public var description: String {
        var parts = ["storage error \(code)"]
        if let unit { parts.append("unit \(unit)") }
        if let path { parts.append("path \(path)") }
        if let offset { parts.append("offset \(offset)") }
        if let errno { parts.append("\(Self.describe(errno: errno)) (errno \(errno))") }
        if let detail { parts.append(detail) }
        return parts.joined(separator: ", ")
    }

    /// The operating system's text for `errno` (`strerror`), e.g. "Read-only file system".
    public static func describe(errno: Int32) -> String {
        guard let text = strerror(errno) else { return "error \(errno)" }
        return String(cString: text)
    }
}
