import Foundation
import LiveCopy
import Testing

@Suite struct TrackedMemoryTests {
    @Test func writesMarkEveryTouchedPageAndCollectClears() throws {
        let memory = try TrackedMemory(pageCount: 200, pageSize: 4096)
        try memory.beginTracking()
        try memory.write([1, 2, 3], at: 4096 * 7 + 10)
        try memory.write(Array(repeating: 9, count: 4096 + 2), at: 4096 * 100 - 1)  // pages 99, 100, 101
        var dirty = PageSet(pageCount: 200)
        memory.collectDirtyPages(into: &dirty)
        #expect(dirty.pages == [7, 99, 100, 101])
        var again = PageSet(pageCount: 200)
        memory.collectDirtyPages(into: &again)
        #expect(again.isEmpty)
        #expect(try memory.read(at: 4096 * 7 + 10, count: 3) == [1, 2, 3])
    }

    @Test func outOfBoundsAndBadGeometryAreTypedErrors() throws {
        let memory = try TrackedMemory(pageCount: 2, pageSize: 64)
        #expect(throws: LiveCopyError.self) { try memory.write([1], at: 128) }
        #expect(throws: LiveCopyError.self) { try memory.write([1, 2], at: 127) }
        #expect(throws: LiveCopyError.self) { try memory.read(at: -1, count: 1) }
        #expect(throws: LiveCopyError.self) { try TrackedMemory(pageCount: 4, pageSize: 100) }
        #expect(throws: LiveCopyError.self) { try TrackedMemory(pageCount: 0) }
        #expect(throws: LiveCopyError.self) { try memory.setMirror(nil) }  // gate not paused
    }

    @Test func pageSetRunsCoverExactlyTheMembers() {
        var set = PageSet(pageCount: 300)
        for page in [0, 1, 2, 63, 64, 65, 127, 128, 200, 299] { set.insert(page) }
        var runs: [Range<Int>] = []
        set.forEachRun { runs.append($0) }
        #expect(runs == [0..<3, 63..<66, 127..<129, 200..<201, 299..<300])
        var limited: [Range<Int>] = []
        PageSet.all(pageCount: 10).forEachRun(maximumLength: 4) { limited.append($0) }
        #expect(limited == [0..<4, 4..<8, 8..<10])
        #expect(PageSet.all(pageCount: 130).count == 130)
    }

    /// A paused gate holds a writer thread until it is resumed.
    @Test func pausedGateHoldsWriters() async throws {
        let memory = try TrackedMemory(pageCount: 4, pageSize: 64)
        await memory.gate.pause()
        let wrote = Flag()
        let thread = Thread {
            try? memory.storeWord(42, at: 0)
            wrote.set()
        }
        thread.start()
        // The writer has not written while paused (checked again after it had every chance).
        for _ in 0..<50 {
            await Task.yield()
            #expect(!wrote.isSet)
        }
        #expect(try memory.read(at: 0, count: 1) == [0])
        memory.gate.resume()
        try await wrote.wait()
        #expect(try memory.read(at: 0, count: 1) == [42])
    }
}

/// A flag set by another thread, awaited without timing assertions.
final class Flag: Sendable {
    private let value = NSLock()
    private let state = LockedBool()

    func set() { state.set() }
    var isSet: Bool { state.get() }

    func wait(limit: Duration = .seconds(120)) async throws {
        let deadline = ContinuousClock.now + limit
        while !isSet {
            guard ContinuousClock.now < deadline else { throw CancellationError() }
            try await Task.sleep(for: .milliseconds(1))
        }
    }
}

final class LockedBool: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    func get() -> Bool { lock.withLock { value } }
}
