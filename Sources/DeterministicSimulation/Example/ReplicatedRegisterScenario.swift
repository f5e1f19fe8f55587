import FaultToleranceCore

/// The simulator's example: a single-writer register replicated on three nodes with
/// majority quorums, run under message loss, delay, duplication, reordering, partitions,
/// replica crashes with torn and lost unsynchronized writes, and fsync and read failures.
///
/// Invariants, checked at every completed read and every replica recovery:
/// - `read-sees-acknowledged-write`: a read returns a version at least as new as the newest
///   write acknowledged before the read began;
/// - `read-returns-written-value`: the value read is the one written with that version;
/// - `recovery-invents-nothing`: a recovering replica finds only versions that were written.
///
/// The correct protocol keeps them on every seed; each ``RegisterBug`` breaks one, and the
/// simulation finds it within a few seeds and replays it exactly from its seed.
public struct ReplicatedRegisterScenario: Sendable {
    /// The mistake planted in the protocol, if any.
    public var bug: RegisterBug
    /// Virtual time simulated per seed.
    public var duration: Duration

    /// Creates a scenario.
    public init(bug: RegisterBug = .none, duration: Duration = .seconds(3)) {
        self.bug = bug
        self.duration = duration
    }

    /// Runs the scenario for one seed.
    public func run(seed: UInt64) -> SimulationReport {
        let world = RegisterWorld(seed: seed, bug: bug)
        world.start()
        world.simulation.run(until: Instant.zero + duration)
        var faults = world.simulation.faults
        for disk in world.disks {
            let injected = disk.injectedFailures
            faults.synchronizeFailures += injected.synchronize
            faults.readFailures += injected.read
        }
        return SimulationReport(
            seed: seed, faults: faults, invariantChecks: world.invariantChecks, operations: world.operations,
            virtualTime: world.simulation.now.nanoseconds, events: world.simulation.eventsProcessed,
            violation: world.violation, traceHash: world.simulation.traceHash)
    }
}

/// The simulated world of one run: three replicas, one writer, two readers, a fault
/// schedule.
private final class RegisterWorld {
    let simulation: Simulation
    let network: SimulatedNetwork
    let bug: RegisterBug
    let replicaNodes: [NodeID] = ["r1", "r2", "r3"]
    let readerNodes: [NodeID] = ["c1", "c2"]
    let writerNode: NodeID = "w"
    var disks: [SimulatedDisk] = []
    var replicas: [RegisterReplica?] = []

    // Writer state.
    var nextOperation: UInt64 = 1
    var nextVersion: UInt64 = 1
    var pendingWrite: (operation: UInt64, version: UInt64, value: UInt64, acknowledged: [NodeID])?
    var newestAcknowledged: UInt64 = 0
    var writtenValues: [UInt64: UInt64] = [0: 0]

    // Reader state, by reader index.
    var pendingReads: [(operation: UInt64, floor: UInt64, replies: [(NodeID, UInt64, UInt64)])?] = [nil, nil]

    var invariantChecks = 0
    var operations = 0
    var violation: InvariantViolation?

    init(seed: UInt64, bug: RegisterBug) {
        simulation = Simulation(seed: seed)
        self.bug = bug
        var random = simulation.random.split()
        let maximumDelay = Duration.milliseconds(Int64.random(in: 2...30, using: &random))
        network = SimulatedNetwork(
            simulation: simulation,
            defaultConditions: LinkConditions(
                lossProbability: Double.random(in: 0...0.08, using: &random),
                duplicateProbability: 0.02,
                reorderProbability: 0.05,
                delay: .milliseconds(1)...maximumDelay,
                reorderDelay: .milliseconds(25)))
        let diskFaults = SimulatedDisk.Faults(synchronizeFailure: 0.01, readFailure: 0.002)
        for (index, node) in replicaNodes.enumerated() {
            let disk = SimulatedDisk(
                id: UnitID(UInt64(index + 1)), capacity: 1024, faults: diskFaults, random: simulation.random.split())
            disks.append(disk)
            replicas.append(try? RegisterReplica(disk: disk, bug: bug))
            network.attach(node) { [unowned self] envelope in replicaReceived(index, envelope) }
        }
        network.attach(writerNode) { [unowned self] envelope in writerReceived(envelope) }
        for (index, node) in readerNodes.enumerated() {
            network.attach(node) { [unowned self] envelope in readerReceived(index, envelope) }
        }
    }

    func start() {
        simulation.schedule(after: .milliseconds(1), owner: writerNode) { [unowned self] in startWrite() }
        for index in readerNodes.indices {
            simulation.schedule(after: .milliseconds(3 + Int64(index)), owner: readerNodes[index]) { [unowned self] in
                startRead(index)
            }
        }
        scheduleFault()
    }

    // MARK: Invariants

    func check(_ condition: Bool, _ invariant: String, _ detail: @autoclosure () -> String) {
        invariantChecks += 1
        if !condition && violation == nil {
            violation = InvariantViolation(invariant: invariant, detail: detail(), at: simulation.now)
        }
    }

    // MARK: Replicas

    func replicaReceived(_ index: Int, _ envelope: Envelope) {
        guard var replica = replicas[index], let request = try? RegisterMessage(envelope.message) else { return }
        do {
            let reply = try replica.handle(request)
            replicas[index] = replica
            if let reply { network.send(reply.message, from: replicaNodes[index], to: envelope.from) }
        } catch {
            // Fail-stop: a replica whose disk failed stops and restarts from what is durable.
            crashReplica(index)
        }
    }

    func crashReplica(_ index: Int) {
        guard replicas[index] != nil else { return }
        replicas[index] = nil
        network.crash(replicaNodes[index])
        simulation.cancelTimers(of: replicaNodes[index])
        let outcome = disks[index].crash()
        simulation.faults.nodeCrashes += 1
        simulation.faults.writesLost += outcome.lost
        simulation.faults.writesTorn += outcome.torn
        simulation.faults.writesSurvived += outcome.survived
        let downtime = simulation.random.duration(in: .milliseconds(10)...(.milliseconds(200)))
        simulation.schedule(after: downtime) { [unowned self] in restartReplica(index) }
    }

    func restartReplica(_ index: Int) {
        do {
            let replica = try RegisterReplica(disk: disks[index], bug: bug)
            check(
                writtenValues[replica.version] == replica.value, "recovery-invents-nothing",
                "\(replicaNodes[index]) recovered version \(replica.version) value \(replica.value)")
            replicas[index] = replica
            network.restart(replicaNodes[index])
            simulation.faults.nodeRestarts += 1
        } catch {
            simulation.schedule(after: .milliseconds(20)) { [unowned self] in restartReplica(index) }
        }
    }

    // MARK: Writer

    var writeQuorum: Int { bug == .acknowledgeOnFirstReply ? 1 : replicaNodes.count / 2 + 1 }

    func startWrite() {
        let value = simulation.random.next()
        let write = (operation: nextOperation, version: nextVersion, value: value, acknowledged: [NodeID]())
        nextOperation += 1
        nextVersion += 1
        writtenValues[write.version] = value
        pendingWrite = write
        sendWrite()
    }

    func sendWrite() {
        guard let write = pendingWrite else { return }
        for node in replicaNodes where !write.acknowledged.contains(node) {
            let request = RegisterMessage.write(operation: write.operation, version: write.version, value: write.value)
            network.send(request.message, from: writerNode, to: node)
        }
        let operation = write.operation
        simulation.schedule(after: .milliseconds(40), owner: writerNode) { [unowned self] in
            if pendingWrite?.operation == operation { sendWrite() }
        }
    }

    func writerReceived(_ envelope: Envelope) {
        guard case .writeAcknowledged(let operation, _)? = try? RegisterMessage(envelope.message),
            var write = pendingWrite, write.operation == operation, !write.acknowledged.contains(envelope.from)
        else { return }
        write.acknowledged.append(envelope.from)
        pendingWrite = write
        guard write.acknowledged.count >= writeQuorum else { return }
        newestAcknowledged = max(newestAcknowledged, write.version)
        pendingWrite = nil
        operations += 1
        let pause = simulation.random.duration(in: .zero...(.milliseconds(30)))
        simulation.schedule(after: pause, owner: writerNode) { [unowned self] in startWrite() }
    }

    // MARK: Readers

    func startRead(_ index: Int) {
        pendingReads[index] = (nextOperation, newestAcknowledged, [])
        nextOperation += 1
        sendRead(index)
    }

    func sendRead(_ index: Int) {
        guard let read = pendingReads[index] else { return }
        for node in replicaNodes where !read.replies.contains(where: { $0.0 == node }) {
            network.send(RegisterMessage.read(operation: read.operation).message, from: readerNodes[index], to: node)
        }
        simulation.schedule(after: .milliseconds(40), owner: readerNodes[index]) { [unowned self] in
            if pendingReads[index]?.operation == read.operation { sendRead(index) }
        }
    }

    func readerReceived(_ index: Int, _ envelope: Envelope) {
        guard case .readReply(let operation, let version, let value)? = try? RegisterMessage(envelope.message),
            var read = pendingReads[index], read.operation == operation,
            !read.replies.contains(where: { $0.0 == envelope.from })
        else { return }
        read.replies.append((envelope.from, version, value))
        pendingReads[index] = read
        guard read.replies.count >= replicaNodes.count / 2 + 1 else { return }
        // safe: the guard above ensures at least two replies.
        let newest = read.replies.max { $0.1 < $1.1 } ?? (envelope.from, 0, 0)
        check(
            newest.1 >= read.floor, "read-sees-acknowledged-write",
            "\(readerNodes[index]) read version \(newest.1) from \(read.replies.map { "\($0.0)=v\($0.1)" }), "
                + "but version \(read.floor) was acknowledged before the read began")
        check(
            writtenValues[newest.1] == newest.2, "read-returns-written-value",
            "\(readerNodes[index]) read value \(newest.2) for version \(newest.1)")
        pendingReads[index] = nil
        operations += 1
        let pause = simulation.random.duration(in: .zero...(.milliseconds(20)))
        simulation.schedule(after: pause, owner: readerNodes[index]) { [unowned self] in startRead(index) }
    }

    // MARK: Faults

    func scheduleFault() {
        let gap = simulation.random.duration(in: .milliseconds(50)...(.milliseconds(250)))
        simulation.schedule(after: gap) { [unowned self] in
            injectFault()
            scheduleFault()
        }
    }

    func injectFault() {
        let victim = Int.random(in: 0..<replicaNodes.count, using: &simulation.random)
        switch Int.random(in: 0..<10, using: &simulation.random) {
        case 0..<3:
            crashReplica(victim)
        case 3..<5:
            let others = replicaNodes.filter { $0 != replicaNodes[victim] } + readerNodes + [writerNode]
            network.partition([replicaNodes[victim]], from: others)
        case 5..<7:
            // Asymmetric: the victim can send but not receive from one client (or the reverse).
            let clients = readerNodes + [writerNode]
            let client = clients[Int.random(in: 0..<clients.count, using: &simulation.random)]
            if simulation.random.chance(0.5) {
                network.cut(from: client, to: replicaNodes[victim])
            } else {
                network.cut(from: replicaNodes[victim], to: client)
            }
        default:
            network.heal()
        }
    }
}
