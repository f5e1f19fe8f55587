import NIOConcurrencyHelpers

// The standard library's and NIO's closure-taking helpers rethrow untyped errors; these keep a
// closure's typed error.

extension NIOLockedValueBox {
    /// `withLockedValue`, keeping `body`'s error type.
    func withLocked<Output, Failure: Error>(
        _ body: (inout Value) throws(Failure) -> Output
    ) throws(Failure) -> Output {
        try withLockedValue { value in Result { () throws(Failure) in try body(&value) } }.get()
    }
}

extension Array where Element == UInt8 {
    /// `withUnsafeBytes`, keeping `body`'s error type.
    func withBytes<Output, Failure: Error>(
        _ body: (UnsafeRawBufferPointer) throws(Failure) -> Output
    ) throws(Failure) -> Output {
        try withUnsafeBytes { raw in Result { () throws(Failure) in try body(raw) } }.get()
    }
}
