import FaultToleranceCore
import FaultToleranceNIO
import LiveCopy
import NIOConcurrencyHelpers
import Testing

/// A source of a program's own that forwards to a TrackedMemory; with `addressable` it also
/// offers the fast path. Counts the slow path's calls.
final class ForwardingSource: LiveCopySource, @unchecked Sendable {
    // unchecked: the wrapped memory is thread-safe; the counter is locked.
    let memory: TrackedMemory
    let slowCopies = NIOLockedValueBox(0)

    init(_ memory: TrackedMemory) { self.memory = memory }

    var pageSize: Int { memory.pageSize }
    var pageCount: Int { memory.pageCount }
    var gate: PauseGate { memory.gate }
    func beginTracking() throws(LiveCopyError) { try memory.beginTracking() }
    func collectDirtyPages(into pages: inout PageSet) { memory.collectDirtyPages(into: &pages) }
    func endTracking() { memory.endTracking() }
    func checksum(ofPage page: Int) -> UInt32 { memory.checksum(ofPage: page) }
    func setMirror(_ mirror: (any WriteMirror)?) throws(LiveCopyError) { try memory.setMirror(mirror) }
    func copyPages(_ pages: Range<Int>, into destination: UnsafeMutableRawPointer) {
        slowCopies.withLockedValue { $0 += 1 }
        memory.copyPages(pages, into: destination)
    }
}

final class AddressableForwardingSource: PageAddressableSource, @unchecked Sendable {
    let inner: ForwardingSource
    init(_ inner: ForwardingSource) { self.inner = inner }
    var pageSize: Int { inner.pageSize }
    var pageCount: Int { inner.pageCount }
    var gate: PauseGate { inner.gate }
    func beginTracking() throws(LiveCopyError) { try inner.beginTracking() }
    func collectDirtyPages(into pages: inout PageSet) { inner.collectDirtyPages(into: &pages) }
    func endTracking() { inner.endTracking() }
    func checksum(ofPage page: Int) -> UInt32 { inner.checksum(ofPage: page) }
    func setMirror(_ mirror: (any WriteMirror)?) throws(LiveCopyError) { try inner.setMirror(mirror) }
    func copyPages(_ pages: Range<Int>, into destination: UnsafeMutableRawPointer) {
        inner.copyPages(pages, into: destination)
    }
    func address(ofPage page: Int) -> UnsafeRawPointer { inner.memory.address(ofPage: page) }
}

@Suite("A program's own live-copy source") struct PageAddressableSourceTests {
    @Test("a source that conforms to PageAddressableSource takes the one-pass path; one that does not is copied out")
    func fastPathIsPublic() async throws {
        for addressable in [false, true] {
            let (online, offline) = try await RemoteLiveCopyTests.pair()
            let memory = try TrackedMemory(pageCount: 256)
            for page in 0..<256 { try memory.storeWord(UInt64(page) &* 31 | 1, at: page * 4096) }
            let forwarding = ForwardingSource(memory)
            let source: any LiveCopySource = addressable ? AddressableForwardingSource(forwarding) : forwarding
            let region = try OfflineRegion(pageCount: 256)
            let serving = Task { try await LiveCopyReceiver(transport: offline, region: region).serveSession() }
            let copy = LiveCopy(source: source, destination: RemoteDestination(transport: online, peer: "offline"))
            _ = try await copy.run()
            await copy.detach()
            _ = try await serving.value
            #expect(identical(memory, region))
            let slow = forwarding.slowCopies.withLockedValue { $0 }
            if addressable {
                #expect(slow == 0, "the fast path copied every page")
            } else {
                #expect(slow >= 256, "each page copied out through copyPages")
            }
            await online.close()
            await offline.close()
        }
    }
}
