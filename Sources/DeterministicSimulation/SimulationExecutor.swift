import DequeModule
public import FaultToleranceCore
import NIOConcurrencyHelpers
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Async runtimes in virtual time: a ``Simulation``, a ``VirtualClock`` reading its time, and
/// a deterministic executor that runs every task of the run, one job at a time, on one
/// thread of its own.
///
/// The shipped runtimes (the heartbeat service, its witness, anything that takes a
/// ``FaultToleranceCore/Transport`` and a ``FaultToleranceCore/RuntimeClock``) run here
/// unchanged: ``run(timeLimit:maximumJobs:_:)`` starts the body as a task preferring the executor, and
/// every child task, `async let` and task group inherits that preference. The driver runs
/// ready jobs in the order they were enqueued; when none is ready it fires the next event of
/// the simulation (a timer, a message delivery), which makes jobs ready again. Nothing reads
/// a real clock, so one seed always gives one interleaving — the model of FoundationDB's
/// single-threaded simulator.
///
/// Rules for code under simulation, each checked:
/// - Spawn unstructured tasks with `spawn(_:)`, or in a runtime with
///   `Task(executorPreference: clock.taskExecutor)`, not `Task {}` (which would run on the
///   global pool). A job enqueued from any other thread fails the run
///   (``AsyncSimulationError/foreignJob``).
/// - Sleep on the ``clock``; a run with no ready job and no pending event is
///   ``AsyncSimulationError/stalled(at:)``.
/// - Touch ``simulation`` and ``network`` only from inside the run (they are not
///   thread-safe).
///
/// ```swift
/// let world = AsyncSimulation(seed: 7)
/// try await world.run(timeLimit: .seconds(30)) {
///     let a = world.network.transport(for: "A")
///     let b = world.network.transport(for: "B")
///     try await a.send(message, to: "B")
///     var incoming = b.incoming.makeAsyncIterator()
///     _ = await incoming.next()  // delivered after the link's delay, in virtual time
/// }
/// ```
public final class AsyncSimulation: @unchecked Sendable {
    /// The event queue and random source of the run (use only from inside the run).
    public let simulation: Simulation
    /// The simulated network, whose transports deliver through ``simulation``.
    public let network: SimulatedNetwork
    /// The virtual clock every runtime in the run must use.
    public let clock: VirtualClock
    private let executor: DeterministicExecutor
    /// Jobs run so far.
    public var jobsRun: Int { executor.jobsRun }

    /// Creates a world at virtual time zero whose faults draw from `seed`.
    public init(seed: UInt64, linkConditions: LinkConditions = .reliable) {
        simulation = Simulation(seed: seed)
        network = SimulatedNetwork(simulation: simulation, defaultConditions: linkConditions)
        executor = DeterministicExecutor()
        clock = VirtualClock(simulation: simulation, executor: executor)
    }

    /// Starts `body` as an unstructured task on the simulation's executor (inside a run).
    @discardableResult
    public func spawn<T: Sendable>(_ body: sending @escaping () async -> T) -> Task<T, Never> {
        Task(executorPreference: executor, operation: body)
    }

    /// Starts a throwing `body` as an unstructured task on the simulation's executor.
    @discardableResult
    public func spawn<T: Sendable>(_ body: sending @escaping () async throws -> T) -> Task<T, any Error> {
        Task(executorPreference: executor, operation: body)
    }

    /// Runs `body` to completion in virtual time and returns its result. Call it once per
    /// world.
    ///
    /// Fails with ``AsyncSimulationError/timeLimitExceeded(at:)`` when virtual time passes
    /// `timeLimit` first, with ``AsyncSimulationError/stalled(at:)`` when every task waits
    /// and nothing is scheduled, and with ``AsyncSimulationError/livelock(jobs:)`` after
    /// `maximumJobs` jobs. When the body returns, sleepers are woken with
    /// `CancellationError` and ready jobs drained; tasks still waiting on something else
    /// (a message stream nobody closed) stay suspended, so the body should cancel and await
    /// what it started.
    public func run<T: Sendable>(
        timeLimit: Duration, maximumJobs: Int = 50_000_000, _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        // The body's task is made here, so it inherits the caller's task-local values (a
        // test's context, so `#expect` inside the body reports to the test); its first job
        // waits in the executor until the driver thread starts.
        let outcome = NIOLockedValueBox<Result<T, any Error>?>(nil)
        let executor = self.executor
        Task(executorPreference: executor) {
            let result: Result<T, any Error>
            do { result = .success(try await body()) } catch { result = .failure(error) }
            outcome.withLockedValue { $0 = result }
            executor.bodyFinished.store(true, ordering: .releasing)
        }
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            DriverThread.start { [self] in
                continuation.resume(with: drive(timeLimit: timeLimit, maximumJobs: maximumJobs, outcome: outcome))
            }
        }
    }

    private func drive<T: Sendable>(
        timeLimit: Duration, maximumJobs: Int, outcome: NIOLockedValueBox<Result<T, any Error>?>
    ) -> Result<T, any Error> {
        executor.bindToCurrentThread()
        let deadline = simulation.now + timeLimit
        var failure: AsyncSimulationError?
        while !executor.bodyFinished.load(ordering: .acquiring) {
            if executor.hasForeignJobs {
                failure = .foreignJob
                break
            }
            if executor.runNext() {
                if executor.jobsRun >= maximumJobs {
                    failure = .livelock(jobs: executor.jobsRun)
                    break
                }
                continue
            }
            guard let next = simulation.nextEventTime else {
                // Nothing runnable. A job from another thread may still be on its way (a
                // `Task {}` that escaped the executor): wait a moment of real time so the
                // error names the cause, not its symptom.
                // Up to 2 s: a loaded machine can take that long to run a pool thread. This is
                // the simulation's own driver thread (never the cooperative pool).
                var waited = 0
                while waited < 2000 && executor.foreignJobs == 0 {
                    usleep(1000)
                    waited += 1
                }
                failure = executor.foreignJobs == 0 ? .stalled(at: simulation.now) : .foreignJob
                break
            }
            if next > deadline {
                failure = .timeLimitExceeded(at: simulation.now)
                break
            }
            simulation.step()
        }
        // Wind down: wake every sleeper with CancellationError and let what is ready finish.
        clock.shutDown()
        var drained = 0
        while drained < 1_000_000 && executor.runNext() { drained += 1 }
        if let failure { return .failure(failure) }
        return outcome.withLockedValue { $0 } ?? .failure(AsyncSimulationError.stalled(at: simulation.now))
    }
}

/// Why an ``AsyncSimulation`` run stopped without the body's result.
public enum AsyncSimulationError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Every task waits, and no timer or delivery is scheduled: a deadlock in the simulated
    /// world.
    case stalled(at: Instant)
    /// Virtual time reached the run's limit before the body returned.
    case timeLimitExceeded(at: Instant)
    /// The run kept executing jobs without finishing.
    case livelock(jobs: Int)
    /// A job arrived from a thread other than the simulation's (a `Task {}` without the
    /// simulation's executor, a real clock, a real socket): the run is no longer
    /// deterministic.
    case foreignJob

    /// One line naming the cause.
    public var description: String {
        switch self {
        case .stalled(let at): "simulation stalled at \(at): every task waits and nothing is scheduled"
        case .timeLimitExceeded(let at): "simulation reached its virtual time limit at \(at)"
        case .livelock(let jobs): "simulation ran \(jobs) jobs without finishing"
        case .foreignJob:
            "a job was enqueued from outside the simulation thread (Task {} instead of spawn, or real I/O)"
        }
    }
}

/// Runs jobs in FIFO order on the thread that drives the simulation.
final class DeterministicExecutor: TaskExecutor, @unchecked Sendable {
    private let lock = NIOLock()
    private var ready = Deque<UnownedJob>()
    private var driver: pthread_t?
    private var foreign = 0
    private let sawForeignJob = Atomic<Bool>(false)
    /// Set when the run's body returns (checked by the driver after every job).
    let bodyFinished = Atomic<Bool>(false)
    private(set) var jobsRun = 0
    private static let printsForeignJobs = getenv("FT_SIM_DEBUG") != nil

    func bindToCurrentThread() { lock.withLock { driver = pthread_self() } }

    var isOnDriverThread: Bool {
        lock.withLock { driver.map { pthread_equal($0, pthread_self()) != 0 } ?? false }
    }

    /// Whether any job came from another thread (cheap: the driver asks after every job).
    var hasForeignJobs: Bool { sawForeignJob.load(ordering: .relaxed) }

    /// Jobs enqueued from other threads so far (`nil` before the driver starts).
    var foreignJobs: Int? { lock.withLock { driver == nil ? nil : foreign } }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let current = pthread_self()
        lock.withLock {
            if let driver, pthread_equal(driver, current) == 0 {
                foreign += 1
                sawForeignJob.store(true, ordering: .relaxed)
                // FT_SIM_DEBUG=1 prints where the stray job came from (addresses for
                // addr2line), the quickest way to find the `Task {}` that escaped.
                if Self.printsForeignJobs {
                    var frames = [UnsafeMutableRawPointer?](repeating: nil, count: 64)
                    let count = backtrace(&frames, 64)
                    backtraceSymbols(&frames, count, 2)
                }
            }
            ready.append(job)
        }
    }

    /// Runs the oldest ready job; `false` when none is ready.
    func runNext() -> Bool {
        let job: UnownedJob? = lock.withLock { ready.popFirst() }
        guard let job else { return false }
        jobsRun += 1
        job.runSynchronously(on: asUnownedTaskExecutor())
        return true
    }
}

/// Virtual time for runtimes under an ``AsyncSimulation``: ``now`` is the simulation's
/// clock, and a sleep is an event in its queue.
public final class VirtualClock: RuntimeClock, @unchecked Sendable {
    private final class Sleeper: @unchecked Sendable {
        enum State {
            case idle
            case waiting(UnsafeContinuation<Void, any Error>)
            case finished
        }
        let lock = NIOLock()
        var state = State.idle
        var timer: Simulation.TimerID?

        /// Resumes the sleeper once; later calls do nothing.
        func finish(_ result: Result<Void, any Error>) {
            let continuation: UnsafeContinuation<Void, any Error>? = lock.withLock {
                switch state {
                case .idle:
                    state = .finished
                    return nil
                case .waiting(let continuation):
                    state = .finished
                    return continuation
                case .finished:
                    return nil
                }
            }
            continuation?.resume(with: result)
        }

        /// Parks `continuation`; resumes it at once with `CancellationError` if the sleep
        /// was already cancelled.
        func park(_ continuation: UnsafeContinuation<Void, any Error>) -> Bool {
            let parked: Bool = lock.withLock {
                if case .idle = state {
                    state = .waiting(continuation)
                    return true
                }
                return false
            }
            if !parked { continuation.resume(throwing: CancellationError()) }
            return parked
        }
    }

    private let simulation: Simulation
    private let executor: DeterministicExecutor
    private let sleepers = NIOLockedValueBox<(next: UInt64, all: [UInt64: Sleeper], shutDown: Bool)>(
        (0, [:], false))

    fileprivate init(simulation: Simulation, executor: DeterministicExecutor) {
        self.simulation = simulation
        self.executor = executor
    }

    /// The simulation's virtual time.
    public var now: Instant { simulation.now }

    /// The simulation's deterministic executor: tasks a runtime starts on its own with this
    /// preference run inside the simulation.
    public var taskExecutor: (any TaskExecutor)? { executor }

    /// Suspends until the simulation reaches `deadline`; throws `CancellationError` if the
    /// task is cancelled first or the run has ended.
    public func sleep(until deadline: Instant) async throws {
        try Task.checkCancellation()
        let sleeper = Sleeper()
        let id: UInt64? = sleepers.withLockedValue { sleepers in
            guard !sleepers.shutDown else { return nil }
            sleepers.next += 1
            sleepers.all[sleepers.next] = sleeper
            return sleepers.next
        }
        guard let id else { throw CancellationError() }
        defer { _ = sleepers.withLockedValue { $0.all.removeValue(forKey: id) } }
        try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Void, any Error>) in
                guard sleeper.park(continuation) else { return }
                sleeper.timer = simulation.schedule(at: deadline) { sleeper.finish(.success(())) }
            }
        } onCancel: {
            sleeper.finish(.failure(CancellationError()))
            // The timer is dead now; drop it so it does not move the clock for nothing.
            if executor.isOnDriverThread, let timer = sleeper.timer { simulation.cancel(timer) }
        }
    }

    /// Wakes every sleeper with `CancellationError`; later sleeps throw at once.
    fileprivate func shutDown() {
        let all = sleepers.withLockedValue { sleepers in
            sleepers.shutDown = true
            return Array(sleepers.all.values)
        }
        for sleeper in all { sleeper.finish(.failure(CancellationError())) }
    }
}

/// A detached POSIX thread for the simulation driver, so a run never blocks a thread of the
/// cooperative pool.
private enum DriverThread {
    private final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    static func start(_ body: @escaping () -> Void) {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        #if canImport(Glibc)
            var thread = pthread_t()
        #else
            var thread: pthread_t?
        #endif
        let status = pthread_create(
            &thread, nil,
            { argument in
                guard let argument else { return nil }
                let box = Unmanaged<Box>.fromOpaque(argument).takeRetainedValue()
                box.body()
                return nil
            }, box)
        if status != 0 {
            // No thread: run on this one (blocks it, but the run still completes).
            Unmanaged<Box>.fromOpaque(box).takeRetainedValue().body()
            return
        }
        #if canImport(Glibc)
            pthread_detach(thread)
        #else
            if let thread { pthread_detach(thread) }
        #endif
    }
}

// glibc's execinfo functions, which the Glibc module does not export.
@_silgen_name("backtrace")
private func backtrace(_ frames: UnsafeMutablePointer<UnsafeMutableRawPointer?>, _ capacity: Int32) -> Int32
@_silgen_name("backtrace_symbols_fd")
private func backtraceSymbols(
    _ frames: UnsafeMutablePointer<UnsafeMutableRawPointer?>, _ count: Int32, _ descriptor: Int32)

/// A node's own clock under an ``AsyncSimulation``: it reads `rate` times virtual time plus
/// `offset`, as a real machine's clock runs fast or slow (rate 1.01: 1% fast), and its sleeps
/// end when its own reading reaches the deadline. Give each node of a scenario its own, to test
/// protocols whose safety rests on a bound of clock drift (leases).
public struct DriftingClock: RuntimeClock {
    /// The simulation's clock underneath.
    public let base: VirtualClock
    /// Local seconds per virtual second (> 0).
    public let rate: Double
    /// The local reading at virtual time zero.
    public let offset: Duration

    /// A clock reading `rate` × virtual time + `offset`; `rate` must be positive.
    public init(base: VirtualClock, rate: Double, offset: Duration = .zero) {
        precondition(rate > 0 && rate.isFinite, "a clock's rate must be a positive number, got \(rate)")
        self.base = base
        self.rate = rate
        self.offset = offset
    }

    private var offsetNanoseconds: Int64 {
        offset.components.seconds * 1_000_000_000 + offset.components.attoseconds / 1_000_000_000
    }

    /// This clock's reading at virtual instant `virtual`.
    public func reading(at virtual: Instant) -> Instant {
        Instant(nanoseconds: Int64(Double(virtual.nanoseconds) * rate) + offsetNanoseconds)
    }

    /// This clock's reading now.
    public var now: Instant { reading(at: base.now) }

    /// Sleeps until this clock reads `deadline` (the first virtual nanosecond at which it does).
    public func sleep(until deadline: Instant) async throws {
        let local = Double(deadline.nanoseconds - offsetNanoseconds)
        try await base.sleep(until: Instant(nanoseconds: Int64((local / rate).rounded(.up))))
    }

    /// The simulation's executor.
    public var taskExecutor: (any TaskExecutor)? { base.taskExecutor }
}
