/// Where a live copy writes: the offline side.
///
/// ``LocalDestination`` copies into an ``OfflineRegion`` in this process;
/// ``RemoteDestination`` sends page batches over a ``FaultToleranceCore/Transport`` to a
/// ``LiveCopyReceiver``.
public protocol LiveCopyDestination: AnyObject, Sendable {
    /// Prepares the destination for a region of this geometry; fails with
    /// ``LiveCopyError/Code/geometryMismatch`` when it cannot hold it.
    func begin(pageSize: Int, pageCount: Int) async throws(LiveCopyError)
    /// Copies `pages` from `source` (writers may be running) and returns how many pages were
    /// actually transferred (zero and unchanged pages may be skipped).
    func copy(_ pages: PageSet, round: Int, from source: any LiveCopySource) async throws(LiveCopyError) -> Int
    /// Copies `pages` without suspending: called with the gate paused in duplicated mode, so
    /// the pages are ordered with the mirrored writes around them.
    func copyNow(_ pages: PageSet, from source: any LiveCopySource) throws(LiveCopyError)
    /// Returns once everything copied or mirrored before the call is applied.
    func barrier() async throws(LiveCopyError)
    /// Starts comparing the destination's pages `pages` with the source's CRC32C `checksums`
    /// as of everything copied or mirrored before the call (called with the gate paused);
    /// the ticket yields the pages that differ.
    func startVerification(of pages: Range<Int>, checksums: [UInt32]) throws(LiveCopyError) -> VerificationTicket
    /// The mirror duplicated mode sends every write to.
    var mirror: any WriteMirror { get }
    /// Ends the session (after duplicated mode is detached).
    func finish() async
}

/// The answer to a verification request, awaited after the gate is open again.
public struct VerificationTicket: Sendable {
    private let wait: @Sendable () async throws(LiveCopyError) -> [Int]

    /// Creates a ticket from a function that waits for the pages that differ.
    public init(_ wait: @escaping @Sendable () async throws(LiveCopyError) -> [Int]) { self.wait = wait }

    /// A ticket that already holds its answer.
    public static func ready(_ pages: [Int]) -> VerificationTicket { VerificationTicket { pages } }

    /// The pages that differ.
    public func mismatches() async throws(LiveCopyError) -> [Int] { try await wait() }
}

/// A destination in this process: pages are copied straight into an ``OfflineRegion``.
public final class LocalDestination: LiveCopyDestination {
    /// The offline copy.
    public let region: OfflineRegion
    /// Mirrors each write into ``region``.
    public let mirror: any WriteMirror

    /// Copies into `region`.
    public init(region: OfflineRegion) {
        self.region = region
        self.mirror = LocalMirror(region)
    }

    /// Checks the geometry.
    public func begin(pageSize: Int, pageCount: Int) async throws(LiveCopyError) {
        guard pageSize == region.pageSize, pageCount == region.pageCount else {
            throw LiveCopyError(
                .geometryMismatch,
                detail:
                    "source has \(pageCount) pages of \(pageSize) bytes, destination \(region.pageCount) of \(region.pageSize)"
            )
        }
    }

    /// Copies runs of up to 1 MiB, yielding between them so other tasks run.
    public func copy(_ pages: PageSet, round: Int, from source: any LiveCopySource) async throws(LiveCopyError) -> Int {
        var runs: [Range<Int>] = []
        pages.forEachRun(maximumLength: max(1, (1 << 20) / region.pageSize)) { runs.append($0) }
        for (index, run) in runs.enumerated() {
            region.copyPages(run, from: source)
            if index % 64 == 63 {
                await Task.yield()
                if Task.isCancelled { throw LiveCopyError(.cancelled, round: round) }
            }
        }
        return pages.count
    }

    /// Copies at once.
    public func copyNow(_ pages: PageSet, from source: any LiveCopySource) throws(LiveCopyError) {
        pages.forEachRun { region.copyPages($0, from: source) }
    }

    /// Nothing is in flight locally.
    public func barrier() async throws(LiveCopyError) {}

    /// Compares at once; throws ``LiveCopyError/Code/outOfBounds`` for pages outside the region
    /// or a checksum count that is not the page count.
    public func startVerification(of pages: Range<Int>, checksums: [UInt32]) throws(LiveCopyError)
        -> VerificationTicket
    {
        guard pages.lowerBound >= 0, pages.upperBound <= region.pageCount, checksums.count == pages.count else {
            throw LiveCopyError(
                .outOfBounds,
                detail: "\(checksums.count) checksums for pages \(pages) of a region of \(region.pageCount)")
        }
        let local = region.checksums(of: pages)
        let differing = zip(pages, zip(local, checksums)).compactMap { $1.0 == $1.1 ? nil : $0 }
        return .ready(differing)
    }

    /// Nothing to end.
    public func finish() async {}
}

/// Duplicated mode to a local ``OfflineRegion``: each write applied to both sides in the gate.
final class LocalMirror: WriteMirror, Sendable {
    let region: OfflineRegion

    init(_ region: OfflineRegion) { self.region = region }

    func mirrorWrite(_ bytes: UnsafeRawBufferPointer, at offset: Int) {
        // The source already checked the bounds; both regions have the same geometry.
        try? region.write(bytes, at: offset)
    }
}
