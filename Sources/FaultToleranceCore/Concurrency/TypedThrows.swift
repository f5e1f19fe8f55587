import NIOConcurrencyHelpers

// The standard library's and NIO's closure-taking helpers rethrow untyped errors; these keep a
// closure's typed error.

extension NIOLockedValueBox {
    /// `withLockedValue`, keeping `body`'s error type.
    package func withLocked<Output, Failure: Error>(
        _ body: (inout Value) throws(Failure) -> Output
    ) throws(Failure) -> Output {
        try withLockedValue { value in Result { () throws(Failure) in try body(&value) } }.get()
    }
}

extension Array where Element == UInt8 {
    /// `withUnsafeBytes`, keeping `body`'s error type.
    package func withBytes<Output, Failure: Error>(
        _ body: (UnsafeRawBufferPointer) throws(Failure) -> Output
    ) throws(Failure) -> Output {
        try withUnsafeBytes { raw in Result { () throws(Failure) in try body(raw) } }.get()
    }
}

extension NIOLock {
    /// `withLock`, keeping `body`'s error type.
    package func withLocked<Output, Failure: Error>(_ body: () throws(Failure) -> Output) throws(Failure) -> Output {
        try withLock { Result { () throws(Failure) in try body() } }.get()
    }
}
