import Foundation
import LiveCopy
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Whether this kernel lets the process write-protect anonymous memory with userfaultfd.
let userfaultSupported = (try? UserfaultMemory(pageCount: 1)) != nil
/// Machines known to support it say so (`FT_REQUIRE_USERFAULTFD=1`, as CI does); there, a
/// missing kernel feature fails the tests instead of skipping them.
let userfaultRequired = getenv("FT_REQUIRE_USERFAULTFD") != nil

@Suite struct UserfaultMemoryTests {
    /// Without kernel support the error is typed and names the step that failed.
    @Test(.enabled(if: !userfaultSupported, "the kernel supports userfaultfd write-protect"))
    func unsupportedIsTyped() {
        do {
            _ = try UserfaultMemory(pageCount: 300)
            Issue.record("UserfaultMemory worked where the probe said it could not")
        } catch {
            #expect(error.code == .unsupported)
            #expect(error.detail?.contains("failed") == true)
        }
    }

    /// Plain stores through the pointer are tracked page by page, and the scan re-arms the
    /// pages it reports. Skipped (reported as skipped) where the kernel lacks support, unless
    /// support is required.
    @Test(.enabled(if: userfaultSupported || userfaultRequired, "the kernel lacks userfaultfd write-protect"))
    func plainWritesAreTracked() throws {
        let memory = try UserfaultMemory(pageCount: 300)
        try memory.beginTracking()
        let pageSize = memory.pageSize
        for page in [0, 5, 6, 64, 299] {
            memory.baseAddress.storeBytes(of: 0xAB, toByteOffset: page * pageSize + 9, as: UInt8.self)
        }
        var dirty = PageSet(pageCount: 300)
        memory.collectDirtyPages(into: &dirty)
        #expect(dirty.pages == [0, 5, 6, 64, 299])
        var again = PageSet(pageCount: 300)
        memory.collectDirtyPages(into: &again)
        #expect(again.isEmpty)
        memory.baseAddress.storeBytes(of: 1, toByteOffset: 7 * pageSize, as: UInt8.self)
        memory.collectDirtyPages(into: &again)
        #expect(again.pages == [7])
        #expect(throws: LiveCopyError.self) { try memory.setMirror(LoopMirror()) }
    }

    /// A snapshot-mode live copy of plain memory: writers store through the pointer (inside the
    /// gate) throughout, and the copy equals the source at the switchover instant.
    @Test(.enabled(if: userfaultSupported || userfaultRequired, "the kernel lacks userfaultfd write-protect"))
    func snapshotCopyOfPlainMemory() async throws {
        let memory = try UserfaultMemory(pageCount: 1024)
        for page in stride(from: 0, to: 1024, by: 3) {
            memory.baseAddress.storeBytes(of: UInt64(page) + 1, toByteOffset: page * memory.pageSize, as: UInt64.self)
        }
        let region = try OfflineRegion(pageCount: 1024, pageSize: memory.pageSize)
        // A writer thread stores through the pointer, holding the gate around each store.
        let stop = LockedBool()
        let stopped = LockedBool()
        Thread {
            var state: UInt64 = 99
            var writes = 0
            while !stop.get() {
                writes += 1
                if writes % 16 == 0 { usleep(1000) }  // a paced load, not a timing assertion
                state = state &* 6_364_136_223_846_793_005 &+ 1
                let offset = Int((state >> 20) % UInt64(memory.byteCount / 8)) * 8
                memory.gate.withEntry {
                    memory.baseAddress.storeBytes(of: state, toByteOffset: offset, as: UInt64.self)
                }
            }
            stopped.set()
        }.start()
        // A generous budget: under ThreadSanitizer the copy runs at a few MB/s. Nothing here
        // asserts on time.
        let copy = LiveCopy(
            source: memory, destination: LocalDestination(region: region),
            policy: .adaptive(downtimeBudget: .seconds(5)),
            duplicate: false)
        let report = try await copy.run()
        stop.set()
        while !stopped.get() { await Task.yield() }
        // The checksum pass ran inside the pause: anything the kernel's tracking had missed
        // would have been recopied there.
        #expect(report.pagesRecopied == 0)
        #expect(report.rounds.count >= 1)
    }
}

final class LoopMirror: WriteMirror, Sendable {
    func mirrorWrite(_ bytes: UnsafeRawBufferPointer, at offset: Int) {}
}
