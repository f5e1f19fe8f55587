public import DeterministicSimulation
package import DisasterRecovery
import ElasticJournal
import FaultToleranceCore
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// A randomized run of journal shipping in virtual time: the shipped ``DisasterRecovery/ShippingSender``
/// and ``DisasterRecovery/ShippingReceiver``, the wire codec, and
/// ``DisasterRecovery/JournalReceiver/appendShipped(_:to:clock:)``, between two real
/// ``ElasticJournal/ElasticJournal``s on simulated disks (``DeterministicSimulation/SimulatedStoragePool``).
///
/// The protected site appends 1 to 3 writes every millisecond and synchronizes every 1 to 5;
/// the sender ticks every 2 ms. The link goes through phases: clean (delays of 0.5 to 3 ms),
/// lossy (messages dropped, duplicated, delayed out of order), and cut. Both sites lose power at
/// random moments (their disks keep, lose or tear what was not synchronized) and come back on
/// their journals: the protected site reuses the sequence numbers of records it lost; the
/// recovery site resumes from what it holds durably.
///
/// Invariants:
/// - `same-records`: every record the recovery site's journal holds is, sequence number, time,
///   volume, offset and bytes, the protected journal's record of that number — checked after
///   every restart and at the end.
/// - `rpo-bound`: after 60 ms of a clean link and no restart, the sender's recovery point
///   objective stays within 40 ms.
/// - `catches-up`: once the faults stop, the recovery site holds every durable protected record.
/// - `reopens`: after a power cut each site's journal opens again.
public struct ShippingScenario: Sendable {
    /// A planted bug, or `nil` for the shipped code.
    package var bug: DisasterRecoveryBug?

    /// Creates a scenario.
    package init(bug: DisasterRecoveryBug? = nil) { self.bug = bug }

    /// Creates a scenario running the shipped code.
    public init() { self.bug = nil }

    /// The planted bugs this scenario catches, by name.
    public static var bugNames: [String] { [DisasterRecoveryBug.shipBeforeDurable.rawValue] }

    /// A scenario with the planted bug `name`, or `nil` when this scenario has none of that name.
    public init?(bugNamed name: String) {
        guard Self.bugNames.contains(name), let bug = DisasterRecoveryBug(rawValue: name) else { return nil }
        self.bug = bug
    }

    /// Runs one seed.
    public func run(seed: UInt64) -> SimulationReport {
        let run = ShippingRun(seed: seed, bug: bug)
        run.run()
        return run.report
    }
}

/// One seed's run; lives on the calling thread.
final class ShippingRun: ShippingSites {
    enum LinkPhase { case clean, lossy, cut }

    /// One site's journal over simulated disks.
    final class Site {
        let power = PowerSwitch()
        let units: SimulatedStoragePool
        let bases: SimulatedStoragePool
        var store: JournalStore?
        var journal: ElasticJournal?
        var down = false
        /// The journal's background work (flushes, rollovers, age-outs), run as steps of the run.
        let flushes = ManualFlushDriver()
        /// Unit salts, from the seed.
        let salts: NIOLockedValueBox<SimulationRandom>

        init(random: inout SimulationRandom) {
            units = SimulatedStoragePool(
                unitCapacity: 64 << 10, budget: 48 * (64 << 10), random: random.split(), power: power)
            bases = SimulatedStoragePool(
                unitCapacity: JournalFormat.baseHeaderSize + (64 << 10), budget: 1 << 30, random: random.split(),
                power: power)
            salts = NIOLockedValueBox(random.split())
        }

        /// Opens the site's store over its disks, reading `clock`.
        func open(clock: ShippedClock) throws(JournalError) -> JournalStore {
            var logger = Logger(label: "ft.dr.simulation")
            logger.logLevel = .critical
            let salts = self.salts
            let store = try JournalStore(
                journalPool: units, basePool: bases, configurations: [:], options: .init(),
                clock: { clock.now() }, salt: { salts.withLockedValue { $0.next() } }, logger: logger, onEvent: nil,
                plantedBug: nil, flushDriver: flushes)
            self.store = store
            return store
        }

        /// Runs the journal's background work scheduled so far, and what it schedules.
        func settle() {
            for _ in 0..<16 where flushes.runPending() > 0 {}
        }

        func crash() -> SimulatedDisk.CrashOutcome {
            flushes.discard()
            try? store?.close()
            store = nil
            journal = nil
            power.restore()
            var total = units.crash()
            let more = bases.crash()
            total.lost += more.lost
            total.torn += more.torn
            total.survived += more.survived
            return total
        }
    }

    static let configuration = JournalConfiguration(
        window: .seconds(3600), quota: 40, durability: .buffered(batchBytes: 16 << 10), indexInterval: 4096)

    let simulation: Simulation
    let bug: DisasterRecoveryBug?
    var protected: Site
    var recovery: Site
    var shippedClock = ShippedClock()
    /// The protected site's clock: the simulation's time, set before each of its operations.
    let protectedClock = ShippedClock()
    var sender: ShippingSender
    var receiver = ShippingReceiver(journal: 1, durableThrough: 0)
    var phase = LinkPhase.clean
    var cleanSince = Instant.zero
    var violation: InvariantViolation?
    var checks = 0
    var operations = 0
    var faultsStopAt = Instant.zero

    init(seed: UInt64, bug: DisasterRecoveryBug?) {
        simulation = Simulation(seed: seed)
        self.bug = bug
        var random = simulation.random
        protected = Site(random: &random)
        recovery = Site(random: &random)
        simulation.random = random
        sender = ShippingSender(
            journal: 1, maximumInFlightBytes: 64 << 10, maximumBatchBytes: 8 << 10,
            acknowledgementTimeout: .milliseconds(30))
        sender.bug = bug
    }

    var random: SimulationRandom {
        get { simulation.random }
        set { simulation.random = newValue }
    }

    func run() {
        guard createJournals(protectedClock: protectedClock, shippedClock: shippedClock) else { return }
        let duration = Duration.milliseconds(int(400...1200))
        faultsStopAt = Instant.zero + duration
        scheduleWrites(until: faultsStopAt + .milliseconds(50))
        scheduleTicks()
        scheduleLinkPhases()
        schedulePowerCuts()
        // The faults stop: a cut that has not struck is called off; a site that lost power restarts.
        _ = simulation.schedule(at: faultsStopAt) { [unowned self] in
            for (site, restart) in [(protected, protectedDown), (recovery, recoveryDown)] {
                if site.power.isCut { restart() } else { site.power.restore() }
            }
        }
        simulation.run(until: faultsStopAt + .milliseconds(400))
        guard violation == nil else { return }
        // Quiet: the recovery site must have everything durable at the protected site.
        checks += 1
        guard let source = protected.journal, let replica = recovery.journal else {
            fail("reopens", "a site is down at the end")
            return
        }
        if replica.durableSequence != source.durableSequence {
            fail(
                "catches-up",
                "the recovery site holds \(replica.durableSequence) of \(source.durableSequence) durable records "
                    + "(sender acknowledged \(sender.acknowledged), in flight \(sender.recordsInFlight))")
        }
        compareRecords("at the end")
        simulation.trace(source.durableSequence << 20 | UInt64(sender.greetings))
    }

    // MARK: - Protected site

    func scheduleWrites(until end: Instant) {
        _ = simulation.schedule(after: .milliseconds(1)) { [unowned self] in
            guard violation == nil, simulation.now < end else { return }
            protectedClock.advance(to: simulation.now)
            // Power lost: the protected site's processes die with it.
            if protected.power.isCut { protectedDown() }
            if let journal = protected.journal, !protected.down {
                let writes = randomWrites()
                operations += writes.count
                do {
                    _ = try journal.appendBuffered(contentsOf: writes)
                    if random.chance(0.4) { try journal.synchronize() }
                } catch {
                    protectedDown()
                }
                protected.settle()
            }
            scheduleWrites(until: end)
        }
    }

    func scheduleTicks() {
        _ = simulation.schedule(after: .milliseconds(2)) { [unowned self] in
            guard violation == nil else { return }
            protectedClock.advance(to: simulation.now)
            if let journal = protected.journal, !protected.down {
                perform(
                    sender.tick(durable: journal.durableSequence, staged: journal.lastSequence, now: simulation.now))
                checkRPO()
            }
            scheduleTicks()
        }
    }

    func perform(_ effects: [ShippingSender.Effect]) {
        var queue = effects
        while !queue.isEmpty {
            switch queue.removeFirst() {
            case .send(let message):
                deliver(message.encode(), toRecovery: true)
            case .read(let from, let through, let maximumBytes):
                guard let journal = protected.journal else { return }
                do {
                    queue += sender.recordsRead(
                        try journal.records(fromSequence: from, through: through, maximumBytes: maximumBytes))
                } catch {
                    queue += sender.recordsRead([])
                    if protected.power.isCut { protectedDown() }
                }
            }
        }
    }

    func protectedDown() {
        guard !protected.down else { return }
        protected.down = true
        _ = simulation.schedule(after: .milliseconds(3)) { [unowned self] in restartProtected() }
    }

    func restartProtected() {
        let outcome = protected.crash()
        count(outcome)
        guard reopen(protected, clock: protectedClock, "the protected site") else { return }
        protected.down = false
        // A new process: a new sender, greeting the recovery site at its first tick.
        sender = ShippingSender(
            journal: 1, maximumInFlightBytes: sender.maximumInFlightBytes, maximumBatchBytes: sender.maximumBatchBytes,
            acknowledgementTimeout: sender.acknowledgementTimeout)
        sender.bug = bug
        cleanSince = simulation.now
        compareRecords("after the protected site restarted")
    }

    // MARK: - Link

    func deliver(_ message: Message, toRecovery: Bool) {
        let phase = simulation.now >= faultsStopAt ? LinkPhase.clean : self.phase
        if phase == .cut {
            simulation.faults.messagesPartitioned += 1
            return
        }
        var copies = 1
        var delay = Duration.microseconds(int(500...3000))
        if phase == .lossy {
            if random.chance(0.2) {
                simulation.faults.messagesLost += 1
                return
            }
            if random.chance(0.1) {
                copies = 2
                simulation.faults.messagesDuplicated += 1
            }
            if random.chance(0.2) {
                delay += .milliseconds(int(1...10))
                simulation.faults.messagesReordered += 1
            }
        }
        for _ in 0..<copies {
            _ = simulation.schedule(after: delay) { [unowned self] in
                simulation.faults.messagesDelivered += 1
                if toRecovery { atRecovery(message) } else { atProtected(message) }
            }
        }
    }

    func atProtected(_ message: Message) {
        guard !protected.down, protected.journal != nil else { return }
        do {
            perform(try sender.received(ShippingMessage.decode(message), now: simulation.now))
        } catch {
            fail("same-records", "the sender refused a message of the recovery site: \(error)")
        }
    }

    func atRecovery(_ message: Message) {
        if recovery.power.isCut { recoveryDown() }
        guard !recovery.down, let journal = recovery.journal else { return }
        var effects: [ShippingReceiver.Effect]
        do {
            effects = try receiver.received(ShippingMessage.decode(message))
        } catch {
            fail("same-records", "the receiver refused a message of the protected site: \(error)")
            return
        }
        while !effects.isEmpty {
            switch effects.removeFirst() {
            case .send(let reply):
                deliver(reply.encode(), toRecovery: false)
            case .append(let records):
                do {
                    let through = try JournalReceiver.appendShipped(records, to: journal, clock: shippedClock)
                    recovery.settle()
                    effects += receiver.appended(through: through)
                } catch  where recovery.power.isCut {
                    recoveryDown()
                    return
                } catch {
                    fail("same-records", "appending shipped records: \(error)")
                    return
                }
            case .fail(let error):
                fail("catches-up", "\(error)")
            }
        }
    }

    func scheduleLinkPhases() {
        _ = simulation.schedule(after: .milliseconds(int(20...150))) { [unowned self] in
            guard violation == nil, simulation.now < faultsStopAt else {
                phase = .clean
                cleanSince = max(cleanSince, faultsStopAt)
                return
            }
            let next: LinkPhase = random.chance(0.5) ? .clean : (random.chance(0.6) ? .lossy : .cut)
            if next == .cut { simulation.faults.partitions += 1 }
            if next == .clean && phase != .clean { cleanSince = simulation.now }
            phase = next
            scheduleLinkPhases()
        }
    }

    // MARK: - Power

    func schedulePowerCuts() {
        for _ in 0..<int(0...3) {
            let at = Instant.zero + .milliseconds(int(10...Int(faultsStopAt.nanoseconds / 1_000_000)))
            let protectedSite = random.chance(0.5)
            let after = int(0...20)
            _ = simulation.schedule(at: at) { [unowned self] in
                guard violation == nil else { return }
                // A switch already cut stays cut (arming it again would bring the power back).
                if protectedSite {
                    guard !protected.down, !protected.power.isCut else { return }
                    protected.power.cut(afterOperations: after)
                } else {
                    guard !recovery.down, !recovery.power.isCut else { return }
                    recovery.power.cut(afterOperations: after)
                    _ = simulation.schedule(after: .milliseconds(5)) { [unowned self] in recoveryDown() }
                }
            }
        }
    }

    func recoveryDown() {
        guard !recovery.down else { return }
        recovery.down = true
        _ = simulation.schedule(after: .milliseconds(3)) { [unowned self] in restartRecovery() }
    }

    func restartRecovery() {
        count(recovery.crash())
        shippedClock = ShippedClock()
        guard reopen(recovery, clock: shippedClock, "the recovery site"), let journal = recovery.journal else { return }
        receiver = ShippingReceiver(journal: 1, durableThrough: journal.durableSequence)
        recovery.down = false
        cleanSince = simulation.now
        compareRecords("after the recovery site restarted")
    }

    // MARK: - Checks

    func checkRPO() {
        guard phase == .clean, !recovery.down, simulation.now - cleanSince > .milliseconds(60) else { return }
        checks += 1
        let rpo = sender.recoveryPointObjective(now: simulation.now)
        if rpo > .milliseconds(40) {
            fail(
                "rpo-bound",
                "RPO \(rpo) after \(simulation.now - cleanSince) of a clean link: sender acknowledged "
                    + "\(sender.acknowledged), durable \(sender.durable), next \(sender.nextToSend.map(String.init) ?? "none"), "
                    + "\(sender.recordsInFlight) in flight, \(sender.greetings) greetings; receiver expects \(receiver.expected)"
            )
        }
    }

    /// The first record `replica` (the recovery site's journal) holds durably that is not
    /// `source`'s (the protected journal's) durable record of that number, said; `nil` when there
    /// is none. Records beyond what the protected site ever staged are left out: the protected
    /// site lost them in a power cut after they shipped, and numbers them again.
    static func firstDifference(source: ElasticJournal, replica: ElasticJournal) throws(JournalError) -> String? {
        let last = min(replica.durableSequence, source.durableSequence)
        let first = max(replica.oldestSequence, source.oldestSequence)
        guard last >= 1, first <= last else { return nil }
        let held = try replica.records(fromSequence: first, through: replica.durableSequence, maximumBytes: .max)
        let truth = try source.records(fromSequence: first, through: source.durableSequence, maximumBytes: .max)
        for record in held {
            let index = Int(record.sequence - first)
            guard index < truth.count else {
                // The recovery site holds a record the protected site does not (durably).
                if source.lastSequence < record.sequence { continue }
                return "record \(record.sequence) is not durable at the protected site"
            }
            guard truth[index] == record else {
                return "record \(record.sequence) differs: recovery site \(record.time) \(record.offset) "
                    + "\(record.bytes.count) bytes, protected \(truth[index].time) \(truth[index].offset) "
                    + "\(truth[index].bytes.count) bytes"
            }
        }
        return nil
    }
}

/// What the two shipping scenarios share: two sites on simulated disks, the faults counted, the
/// writes drawn, the checks and the report.
protocol ShippingSites: AnyObject {
    var protected: ShippingRun.Site { get }
    var recovery: ShippingRun.Site { get }
    var simulation: Simulation { get }
    var violation: InvariantViolation? { get set }
    var checks: Int { get set }
    var operations: Int { get }
}

extension ShippingSites {
    func int(_ range: ClosedRange<Int>) -> Int {
        range.lowerBound + Int(simulation.random.next() % UInt64(range.count))
    }

    func fail(_ invariant: String, _ detail: String) {
        guard violation == nil else { return }
        violation = InvariantViolation(invariant: invariant, detail: detail, at: simulation.now)
    }

    var report: SimulationReport {
        SimulationReport(
            seed: simulation.seed, faults: simulation.faults, invariantChecks: checks, operations: operations,
            virtualTime: simulation.now.nanoseconds, events: simulation.eventsProcessed, violation: violation,
            traceHash: simulation.traceHash)
    }

    /// The protected workload's next 1 to 3 writes: up to 512 bytes each, anywhere in volume 1.
    func randomWrites() -> [JournalWrite] {
        (0..<int(1...3)).map { _ in
            let length = int(1...512)
            return JournalWrite(
                volume: 1, offset: UInt64(int(0...(64 << 10) - length)),
                bytes: [UInt8](repeating: UInt8(truncatingIfNeeded: int(1...255)), count: length))
        }
    }

    /// Opens both sites' stores and creates journal 1 at each; fails `setup` and returns `false`
    /// when that fails.
    func createJournals(protectedClock: ShippedClock, shippedClock: ShippedClock) -> Bool {
        do {
            protected.journal = try protected.open(clock: protectedClock).createJournal(
                1, configuration: ShippingRun.configuration, volumes: [1])
            recovery.journal = try recovery.open(clock: shippedClock).createJournal(
                1, configuration: ShippingRun.configuration, volumes: [1])
            return true
        } catch {
            fail("setup", "\(error)")
            return false
        }
    }

    /// Opens `site`'s store again after its disks crashed and finds journal 1; fails `reopens`
    /// and returns `false` when that fails.
    func reopen(_ site: ShippingRun.Site, clock: ShippedClock, _ name: String) -> Bool {
        do {
            guard let journal = try site.open(clock: clock).journal(1) else {
                throw StorageError(.unknownUnit, detail: "journal 1 is gone")
            }
            site.journal = journal
            return true
        } catch {
            fail("reopens", "\(name): \(error)")
            return false
        }
    }

    func count(_ outcome: SimulatedDisk.CrashOutcome) {
        simulation.faults.nodeCrashes += 1
        simulation.faults.writesLost += outcome.lost
        simulation.faults.writesTorn += outcome.torn
        simulation.faults.writesSurvived += outcome.survived
    }

    /// Every record the recovery site holds durably is the protected journal's record of that
    /// number (checked when both sites are up with power).
    func compareRecords(_ when: String) {
        guard let source = protected.journal, let replica = recovery.journal, !protected.down, !recovery.down,
            !protected.power.isCut, !recovery.power.isCut
        else { return }
        checks += 1
        do {
            if let difference = try ShippingRun.firstDifference(source: source, replica: replica) {
                fail("same-records", "\(when): \(difference)")
            }
        } catch {
            // A power cut armed for this moment: the site goes down at its next operation.
            if protected.power.isCut || recovery.power.isCut { return }
            fail("same-records", "\(when): reading the journals: \(error)")
        }
    }
}
