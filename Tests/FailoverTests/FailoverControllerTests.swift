import DeterministicSimulation
import Failover
import FaultToleranceCore
import Testing

func at(_ milliseconds: Int) -> Instant { Instant(nanoseconds: Int64(milliseconds) * 1_000_000) }

extension FailoverController.Command {
    var promoted: (NodeID, UInt64)? {
        if case .promote(let node, let epoch, _, _) = self { return (node, epoch) }
        return nil
    }
}

/// A controller over "a" (made primary of epoch 1 at 40 ms) and backups "b" and "c".
func servingController(
    mode: ReplicationMode = .synchronous, syncSet: [NodeID] = ["b"]
) -> (FailoverController, [FailoverController.Command]) {
    var controller = FailoverController(
        configuration: .init(servers: ["a", "b", "c"], mode: mode), epoch: 0, now: at(0))
    var out: [FailoverController.Command] = []
    out += controller.report("a", .init(role: .backup, epoch: 0, position: LogPosition(epoch: 0, index: 5)), now: at(1))
    out += controller.report("b", .init(role: .backup, epoch: 0, position: LogPosition(epoch: 0, index: 3)), now: at(1))
    out += controller.report("c", .init(role: .backup, epoch: 0, position: LogPosition(epoch: 0, index: 4)), now: at(1))
    out += controller.tick(now: at(40))
    out += controller.report(
        "a", .init(role: .primary, epoch: 1, position: LogPosition(epoch: 1, index: 9), syncSet: syncSet), now: at(41))
    return (controller, out)
}

@Suite struct FailoverControllerTests {
    @Test func aFreshControllerWaitsOutAnyOldLeaseThenPromotesTheMostUpToDateServer() {
        var controller = FailoverController(configuration: .init(servers: ["a", "b"]), epoch: 0, now: at(0))
        #expect(
            controller.report("a", .init(role: .backup, epoch: 0, position: .init(epoch: 0, index: 2)), now: at(1))
                .isEmpty)
        #expect(
            controller.report("b", .init(role: .backup, epoch: 0, position: .init(epoch: 0, index: 7)), now: at(1))
                .isEmpty)
        // Not before a former controller's lease could have run out (30 ms x 1.01 + 2 ms).
        #expect(controller.tick(now: at(32)).isEmpty)
        let out = controller.tick(now: at(33))
        #expect(out.first == .recordEpoch(1))
        #expect(out.contains { $0.promoted?.0 == "b" && $0.promoted?.1 == 1 })
        #expect(!out.contains { if case .renewLease = $0 { true } else { false } })
        #expect(controller.primary == "b" && controller.epoch == 1)
        // The new primary's report asks for its lease; the grant echoes the report's stamp.
        let grant = controller.report(
            "b", .init(role: .primary, epoch: 1, position: .init(epoch: 0, index: 7), stamp: 123_456), now: at(34))
        #expect(grant == [.renewLease(to: "b", epoch: 1, duration: .milliseconds(30), stamp: 123_456, syncSet: [])])
    }

    @Test func aDeadPrimaryIsSteppedDownFencedAndReplacedOnlyAfterItsLeaseRunsOut() {
        var (controller, _) = servingController()
        // A grant answers each of its reports while it lives.
        #expect(controller.tick(now: at(45)).isEmpty)
        let report = FailoverController.Report(
            role: .primary, epoch: 1, position: .init(epoch: 1, index: 9), syncSet: ["b"], stamp: 50)
        #expect(
            controller.report("a", report, now: at(50)) == [
                .renewLease(to: "a", epoch: 1, duration: .milliseconds(30), stamp: 50, syncSet: ["b"])
            ])
        let failed = controller.heartbeat("a", alive: false, now: at(55))
        #expect(failed.prefix(3) == [.recordEpoch(2), .stepDown(to: "a", epoch: 2), .fence("a", epoch: 2)])
        #expect(!failed.contains { $0.promoted != nil })
        #expect(controller.primary == nil)
        // The last grant left at 50 ms: it may hold until 82.3 ms on a slow clock.
        #expect(!controller.tick(now: at(82)).contains { $0.promoted != nil })
        let out = controller.tick(now: at(83))
        // "b" is the sync set's only member: it holds every acknowledged operation, though "c"
        // reported a higher position before "a" became primary.
        #expect(out.contains { $0.promoted?.0 == "b" && $0.promoted?.1 == 2 })
        #expect(controller.primary == "b" && controller.epoch == 2)
    }

    @Test func aConfirmedStepDownLetsTheBackupTakeOverBeforeTheLeaseRunsOut() {
        var (controller, _) = servingController()
        _ = controller.probe("a", healthy: false, now: at(50))
        _ = controller.probe("a", healthy: false, now: at(51))
        let failed = controller.probe("a", healthy: false, now: at(52))
        #expect(failed.contains(.stepDown(to: "a", epoch: 2)))
        let out = controller.report(
            "a", .init(role: .steppedDown, epoch: 2, position: .init(epoch: 1, index: 12)), now: at(53))
        #expect(out.contains { $0.promoted != nil })
        #expect(controller.primary != nil && controller.primary != "a")
    }

    /// In asynchronous mode too (with its minimum sync set of one): a backup outside it may lack
    /// more than the lag bound.
    @Test(arguments: [ReplicationMode.synchronous, .asynchronous(maximumLag: 8)])
    func noBackupOutsideTheSyncSetIsPromotedAndTheControllerSaysWhy(mode: ReplicationMode) {
        var (controller, _) = servingController(mode: mode, syncSet: ["b"])
        _ = controller.heartbeat("b", alive: false, now: at(45))  // released from the sync set
        #expect(!controller.syncSet.contains("b"))
        let out = controller.heartbeat("a", alive: false, now: at(50)) + controller.tick(now: at(200))
        #expect(!out.contains { $0.promoted != nil })
        #expect(out.contains { if case .waiting(let reason) = $0 { reason.contains("sync set") } else { false } })
        #expect(controller.waitingReason?.contains("sync set") == true)
    }

    @Test func aDeadBackupIsReleasedFromTheSyncSetBeforeThePrimaryMayStopWaitingForIt() {
        var (controller, _) = servingController(syncSet: ["b", "c"])
        #expect(controller.syncSet == ["b", "c"])
        let out = controller.heartbeat("c", alive: false, now: at(45))
        #expect(out.contains(.releaseBackup(to: "a", epoch: 1, backup: "c")))
        #expect(controller.syncSet == ["b"])
        // The release was lost: the primary still reports "c"; the controller sends it again and
        // keeps "c" out.
        let again = controller.report(
            "a", .init(role: .primary, epoch: 1, position: .init(epoch: 1, index: 10), syncSet: ["b", "c"]), now: at(46)
        )
        #expect(again.contains(.releaseBackup(to: "a", epoch: 1, backup: "c")))
        #expect(controller.syncSet == ["b"])
        // Once the primary dropped it, a later re-add (caught up again) counts.
        _ = controller.report(
            "a", .init(role: .primary, epoch: 1, position: .init(epoch: 1, index: 11), syncSet: ["b"]), now: at(47))
        _ = controller.heartbeat("c", alive: true, now: at(48))
        _ = controller.report(
            "a", .init(role: .primary, epoch: 1, position: .init(epoch: 1, index: 12), syncSet: ["b", "c"]), now: at(49)
        )
        #expect(controller.syncSet == ["b", "c"])
    }

    @Test func asynchronousModeRefusesABackupThatTrailsTooFar() {
        var controller = FailoverController(
            configuration: .init(servers: ["a", "b"], mode: .asynchronous(maximumLag: 100), promotionLagLimit: 10),
            epoch: 0, now: at(0))
        _ = controller.report("a", .init(role: .backup, epoch: 0, position: .start), now: at(0))
        _ = controller.report("b", .init(role: .backup, epoch: 0, position: .start), now: at(0))
        _ = controller.tick(now: at(40))
        let primary = controller.primary ?? "a"
        let backup: NodeID = primary == "a" ? "b" : "a"
        _ = controller.report(
            primary, .init(role: .primary, epoch: 1, position: .init(epoch: 1, index: 500)), now: at(41))
        _ = controller.report(
            backup, .init(role: .backup, epoch: 1, position: .init(epoch: 1, index: 480)), now: at(41))
        let out = controller.heartbeat(primary, alive: false, now: at(42)) + controller.tick(now: at(100))
        #expect(!out.contains { $0.promoted != nil })
        #expect(controller.waitingReason?.contains("trails") == true)
        // Once it catches up to within the limit it is promoted.
        let caught = controller.report(
            backup, .init(role: .backup, epoch: 1, position: .init(epoch: 1, index: 495)), now: at(101))
        #expect(caught.contains { $0.promoted?.0 == backup && $0.promoted?.1 == 2 })
    }

    @Test func aStalePrimaryIsToldToStepDownAndALostPromotionIsSentAgain() {
        var (controller, _) = servingController()
        _ = controller.heartbeat("a", alive: false, now: at(50))
        _ = controller.tick(now: at(90))
        #expect(controller.primary == "b")
        // "a" comes back still believing it is primary of epoch 1.
        _ = controller.heartbeat("a", alive: true, now: at(95))
        let stale = controller.report(
            "a", .init(role: .primary, epoch: 1, position: .init(epoch: 1, index: 9)), now: at(95))
        #expect(stale.contains(.stepDown(to: "a", epoch: 2)))
        // "b" reports as a backup: the promotion did not arrive.
        let lost = controller.report(
            "b", .init(role: .backup, epoch: 1, position: .init(epoch: 1, index: 9)), now: at(96))
        #expect(lost.contains { $0.promoted?.0 == "b" && $0.promoted?.1 == 2 })
    }

    @Test func aSwitchoverPromotesTheTargetOnceTheOldPrimaryConfirmedItsStepDown() throws {
        var (controller, _) = servingController(syncSet: ["b", "c"])
        let first = try controller.switchover(to: "c", now: at(50))
        #expect(first.contains(.stepDown(to: "a", epoch: 2)))
        #expect(!first.contains(.fence("a", epoch: 2)))
        #expect(controller.status.failingOver && controller.status.failingOverFrom == "a")
        // "c" is at 18 when "a" confirms at 20: what "c" lacks was never acknowledged (it is in
        // the sync set), and a stepped-down primary answers no catch-up: "c" is promoted now.
        _ = controller.report("c", .init(role: .backup, epoch: 1, position: .init(epoch: 1, index: 18)), now: at(51))
        #expect(controller.tick(now: at(51)).allSatisfy { $0.promoted == nil })
        let out = controller.report(
            "a", .init(role: .steppedDown, epoch: 2, position: .init(epoch: 1, index: 20)), now: at(52))
        #expect(out.contains { $0.promoted?.0 == "c" && $0.promoted?.1 == 2 })
        #expect(controller.status.primary == "c" && controller.status.epoch == 2)
    }

    @Test func aSwitchoverIsRefusedWithoutAPrimaryOrToABackupThatMayLackAcknowledgedOperations() throws {
        var (controller, _) = servingController(syncSet: ["b"])
        #expect { _ = try controller.switchover(to: "zz", now: at(50)) } throws: {
            ($0 as? FailoverError)?.code == .invalidConfiguration
        }
        #expect { _ = try controller.switchover(to: "a", now: at(50)) } throws: {
            ($0 as? FailoverError)?.code == .invalidConfiguration
        }
        // "c" is not in the sync set: it may lack acknowledged operations.
        #expect { _ = try controller.switchover(to: "c", now: at(50)) } throws: {
            ($0 as? FailoverError)?.detail?.contains("sync set") == true
        }
        // Nothing changed: "a" still serves in epoch 1.
        #expect(controller.primary == "a" && controller.epoch == 1)
        // Without a target: the newest backup of the sync set.
        let out = try controller.switchover(now: at(51))
        #expect(out.contains(.stepDown(to: "a", epoch: 2)))
        let promoted = controller.report(
            "a", .init(role: .steppedDown, epoch: 2, position: .init(epoch: 1, index: 9)), now: at(52))
        #expect(promoted.contains { $0.promoted?.0 == "b" && $0.promoted?.1 == 2 })
        // While a failover is under way there is nothing to switch from.
        var (failing, _) = servingController(syncSet: ["b"])
        _ = try failing.switchover(to: "b", now: at(50))
        #expect { _ = try failing.switchover(to: "b", now: at(51)) } throws: {
            ($0 as? FailoverError)?.code == .notPrimary
        }
    }

    @Test func aSwitchoverWhoseTargetDiesFallsBackToTheOldPrimary() throws {
        var (controller, _) = servingController(syncSet: ["b"])
        _ = try controller.switchover(to: "b", now: at(50))
        _ = controller.heartbeat("b", alive: false, now: at(51))
        let out = controller.report(
            "a", .init(role: .steppedDown, epoch: 2, position: .init(epoch: 1, index: 9)), now: at(52))
        // "a" confirmed and holds everything it had; "c" is not known to: "a" serves again.
        let promoted = out.compactMap(\.promoted).first ?? controller.tick(now: at(200)).compactMap(\.promoted).first
        #expect(promoted?.0 == "a")
    }

    @Test func aPrimaryWhoseLeaseLapsedStepsDownAndTheMostCompleteServerServesInANewEpoch() {
        var (controller, _) = servingController()
        let out = controller.report(
            "a", .init(role: .steppedDown, epoch: 1, position: .init(epoch: 1, index: 9)), now: at(60))
        #expect(out.prefix(2) == [.recordEpoch(2), .stepDown(to: "a", epoch: 2)])
        // Once it confirms the new epoch it holds everything it had, more than the sync set's
        // backup: it serves again at once, in an epoch of its own (3), so that its reports sent
        // while stepped down in epoch 2 cannot read as a new step-down.
        let stepped = FailoverController.Report(role: .steppedDown, epoch: 2, position: .init(epoch: 1, index: 9))
        let confirmed = controller.report("a", stepped, now: at(61))
        #expect(confirmed.contains(.recordEpoch(3)))
        #expect(confirmed.contains { $0.promoted?.0 == "a" && $0.promoted?.1 == 3 })
        let stale = controller.report("a", stepped, now: at(62))
        #expect(!stale.contains(.recordEpoch(4)))
        #expect(controller.primary == "a")
        // Failing its clients' probes, it is not promoted again: the sync set's backup is.
        var (probed, _) = servingController()
        for millisecond in 50...52 { _ = probed.probe("a", healthy: false, now: at(millisecond)) }
        let afterProbes = probed.report(
            "a", .init(role: .steppedDown, epoch: 2, position: .init(epoch: 1, index: 9)), now: at(53))
        #expect(afterProbes.contains { $0.promoted?.0 == "b" && $0.promoted?.1 == 2 })
    }

    @Test func aPromotedBackupThatDiesBeforeServingIsReplacedFromTheSameSyncSet() {
        var (controller, _) = servingController(syncSet: ["b", "c"])
        _ = controller.heartbeat("a", alive: false, now: at(50))
        let first = controller.tick(now: at(90))
        // "c" reported the higher position of the two.
        #expect(first.contains { $0.promoted?.0 == "c" && $0.promoted?.1 == 2 })
        #expect(controller.syncSet == ["b"])
        // "c" dies before it reports as primary (it acknowledged nothing): "b" still holds
        // everything "a" acknowledged.
        _ = controller.heartbeat("c", alive: false, now: at(95))
        let second = controller.tick(now: at(140))
        #expect(second.contains { $0.promoted?.0 == "b" && $0.promoted?.1 == 3 })
        // "b" dies too, before serving, and "c" is heard again: unrestarted (the same
        // incarnation), it still holds everything, for nobody acknowledged anything since.
        var again = controller
        _ = again.heartbeat("b", alive: false, now: at(150))
        _ = again.heartbeat("c", alive: true, now: at(150))
        #expect(again.tick(now: at(200)).contains { $0.promoted?.0 == "c" && $0.promoted?.1 == 4 })
        // Restarted (another incarnation: an empty memory), nobody left holds it all: the
        // controller waits and says so.
        _ = controller.heartbeat("b", alive: false, now: at(150))
        _ = controller.heartbeat("c", alive: true, now: at(150))
        _ = controller.report("c", .init(role: .backup, epoch: 3, position: .start, incarnation: 42), now: at(150))
        _ = controller.tick(now: at(200))
        #expect(controller.primary == nil)
        #expect(controller.waitingReason?.contains("sync set") == true)
    }

    /// Simulation seed 705: a primary that wrote nothing in its epoch was replaced by its only
    /// sync backup, which died before serving; the old primary, never restarted, still held
    /// everything, but the controller counted it only while the newest entry was of its own
    /// epoch, and waited for ever with nobody to promote.
    @Test func theFormerPrimaryStillHoldsEverythingWhenItsSuccessorDiesBeforeServing() {
        var (controller, _) = servingController(syncSet: ["b"])
        // "a" is granted (it may acknowledge with "b"), but its log's newest entry is of epoch 0.
        let stale = LogPosition(epoch: 0, index: 5)
        _ = controller.report(
            "a", .init(role: .primary, epoch: 1, position: stale, syncSet: ["b"], stamp: 45), now: at(45))
        _ = controller.report("b", .init(role: .backup, epoch: 1, position: stale), now: at(46))
        _ = controller.heartbeat("a", alive: false, now: at(50))
        let first = controller.tick(now: at(90))
        #expect(first.contains { $0.promoted?.0 == "b" && $0.promoted?.1 == 2 })
        // "a" comes back (the same incarnation, so the same memory) as "b" dies unpromoted.
        _ = controller.heartbeat("a", alive: true, now: at(91))
        _ = controller.report("a", .init(role: .steppedDown, epoch: 2, position: stale), now: at(91))
        _ = controller.heartbeat("b", alive: false, now: at(95))
        let second = controller.tick(now: at(140))
        #expect(second.contains { $0.promoted?.0 == "a" && $0.promoted?.1 == 3 })
        // Had "a" restarted (another incarnation: an empty memory), nobody would be left ("c"
        // trails where "b" was promoted).
        var (other, _) = servingController(syncSet: ["b"])
        _ = other.report("a", .init(role: .primary, epoch: 1, position: stale, syncSet: ["b"], stamp: 45), now: at(45))
        _ = other.report("b", .init(role: .backup, epoch: 1, position: stale), now: at(46))
        _ = other.heartbeat("a", alive: false, now: at(50))
        _ = other.tick(now: at(90))
        _ = other.heartbeat("a", alive: true, now: at(91))
        _ = other.report("a", .init(role: .backup, epoch: 0, position: .start, incarnation: 7), now: at(91))
        _ = other.heartbeat("b", alive: false, now: at(95))
        #expect(!other.tick(now: at(140)).contains { $0.promoted != nil })
        #expect(other.waitingReason?.contains("sync set") == true)
    }

    /// Found by the pair harness: a primary that restarted faster than the detector noticed
    /// reported as a fresh backup, and was promoted again in its epoch with an empty store.
    @Test func aPrimaryThatRestartedIsReplacedNotPromotedAgain() {
        var (controller, _) = servingController(syncSet: ["b"])
        let fresh = FailoverController.Report(role: .backup, epoch: 0, position: .start, incarnation: 99)
        let out = controller.report("a", fresh, now: at(60))
        #expect(!out.contains { $0.promoted?.0 == "a" })
        #expect(out.prefix(2) == [.recordEpoch(2), .stepDown(to: "a", epoch: 2)])
        // A backup that restarts leaves the sync set.
        var (other, _) = servingController(syncSet: ["b", "c"])
        _ = other.report("c", .init(role: .backup, epoch: 1, position: .start, incarnation: 5), now: at(60))
        #expect(other.syncSet == ["b"])
    }

    @Test func aRestartedControllerKeepsTheServingPrimaryOrWaitsForEveryServer() {
        var controller = FailoverController(configuration: .init(servers: ["a", "b"]), epoch: 4, now: at(0))
        _ = controller.report("b", .init(role: .primary, epoch: 4, position: .init(epoch: 4, index: 70)), now: at(1))
        #expect(controller.primary == "b" && controller.epoch == 4)
        // Another restart, the primary gone: it waits for both before choosing.
        var other = FailoverController(configuration: .init(servers: ["a", "b"]), epoch: 4, now: at(0))
        _ = other.report("a", .init(role: .backup, epoch: 4, position: .init(epoch: 4, index: 60)), now: at(1))
        #expect(!other.tick(now: at(40)).contains { $0.promoted != nil })
        #expect(other.waitingReason?.contains("b") == true)
    }

    /// Random verdicts, probes, reports and time over many seeds: epochs only grow and each is
    /// recorded before it is used, each is promoted at most once, a promotion never comes before
    /// the last lease granted to another server ran out (unless that server confirmed its
    /// step-down). (Which backup a synchronous promotion may pick is checked case by case above
    /// and, against acknowledged operations, by the simulation.)
    @Test func underRandomInputsThereIsAtMostOnePromotionPerEpochAndNoneInsideALease() {
        let servers: [NodeID] = ["a", "b", "c"]
        var promotions = 0
        for seed in 1...300 as ClosedRange<UInt64> {
            var random = SimulationRandom(seed: seed)
            var controller = FailoverController(configuration: .init(servers: servers), epoch: 0, now: at(0))
            var promoted: Set<UInt64> = []
            var lastGrant: (node: NodeID, at: Int, epoch: UInt64)?
            var recorded: UInt64 = 0
            var confirmed: [NodeID: UInt64] = [:]
            var positions: [NodeID: UInt64] = [:]
            var clock = 0
            for _ in 0..<400 {
                clock += Int(random.next() % 6)
                let node = servers[Int(random.next() % 3)]
                var out: [FailoverController.Command]
                let primaryBefore = controller.primary
                switch random.next() % 5 {
                case 0: out = controller.heartbeat(node, alive: random.next() % 3 != 0, now: at(clock))
                case 1: out = controller.probe(node, healthy: random.next() % 4 != 0, now: at(clock))
                case 2:
                    positions[node, default: 0] += random.next() % 3
                    let role: ServiceConfiguration.Role =
                        node == controller.primary ? .primary : (random.next() % 8 == 0 ? .steppedDown : .backup)
                    if role != .primary { confirmed[node] = max(confirmed[node] ?? 0, controller.epoch) }
                    let position = LogPosition(epoch: controller.epoch, index: positions[node] ?? 0)
                    let sync = servers.filter { $0 != node && random.next() % 2 == 0 }
                    out = controller.report(
                        node, .init(role: role, epoch: controller.epoch, position: position, syncSet: sync),
                        now: at(clock))
                default: out = controller.tick(now: at(clock))
                }
                for command in out {
                    switch command {
                    case .recordEpoch(let epoch):
                        #expect(epoch > recorded, "seed \(seed)")
                        recorded = epoch
                    case .promote(let target, let epoch, _, _):
                        #expect(epoch == recorded, "seed \(seed): promotion of an epoch not recorded first")
                        guard primaryBefore != target else { continue }  // a lost promotion sent again
                        promotions += 1
                        #expect(!promoted.contains(epoch), "seed \(seed): epoch \(epoch) promoted twice")
                        promoted.insert(epoch)
                        if let grant = lastGrant, grant.node != target {
                            let waited = clock - grant.at
                            // It stopped serving once it confirmed a step-down to a later epoch.
                            let stepped = (confirmed[grant.node] ?? 0) > grant.epoch
                            #expect(
                                waited >= 33 || stepped,
                                "seed \(seed): promoted \(target) \(waited) ms after a grant to \(grant.node) (epoch \(epoch))"
                            )
                        }
                    case .renewLease(let target, let epoch, _, _, _):
                        lastGrant = (target, clock, epoch)
                    default: break
                    }
                }
            }
        }
        // The inputs do exercise failovers.
        #expect(promotions > 300)
    }
}

/// Journaled servers (``FailoverController/Configuration/durableServers``): a restart that kept
/// the disk keeps the sync set, so a whole pair's power loss ends with a promotion.
@Suite struct DurableServersTests {
    /// "a" primary of epoch 1 at 9 with the other server in its sync set; then both restart (new
    /// incarnations), the backup first, reporting `backupAfter`, the primary `primaryAfter`.
    static func powerLoss(durable: Bool, primaryAfter: LogPosition, backupAfter: LogPosition) -> (
        FailoverController, primary: NodeID, backup: NodeID, [FailoverController.Command]
    ) {
        var controller = FailoverController(
            configuration: .init(servers: ["a", "b"], durableServers: durable), epoch: 0, now: at(0))
        _ = controller.report("a", .init(role: .backup, epoch: 0, position: .start, incarnation: 1), now: at(1))
        _ = controller.report("b", .init(role: .backup, epoch: 0, position: .start, incarnation: 1), now: at(1))
        _ = controller.tick(now: at(40))
        let primary = controller.primary ?? "a"
        let backup: NodeID = primary == "a" ? "b" : "a"
        let nine = LogPosition(epoch: 1, index: 9)
        _ = controller.report(
            primary, .init(role: .primary, epoch: 1, position: nine, syncSet: [backup], stamp: 41, incarnation: 1),
            now: at(41))
        _ = controller.report(backup, .init(role: .backup, epoch: 1, position: nine, incarnation: 1), now: at(42))
        // The power fails; both come back, the backup's report first.
        var out = controller.report(
            backup, .init(role: .backup, epoch: 1, position: backupAfter, stamp: 1, incarnation: 2), now: at(300))
        out += controller.report(
            primary, .init(role: .backup, epoch: 1, position: primaryAfter, stamp: 1, incarnation: 2), now: at(300))
        for step in 1...20 {
            let now = at(300 + step * 10)
            out += controller.heartbeat(primary, alive: true, now: now)
            out += controller.heartbeat(backup, alive: true, now: now)
            for (node, position) in [(backup, backupAfter), (primary, primaryAfter)] {
                out += controller.report(
                    node,
                    .init(
                        role: .backup, epoch: controller.epoch, position: position, stamp: Int64(step + 1),
                        incarnation: 2), now: now)
            }
        }
        return (controller, primary, backup, out)
    }

    static func promotions(_ out: [FailoverController.Command]) -> [NodeID] {
        out.compactMap { $0.promoted }.filter { $0.1 >= 2 }.map(\.0)
    }

    @Test func afterAWholePairsPowerLossJournaledServersFailOverToTheSyncSet() {
        let nine = LogPosition(epoch: 1, index: 9)
        let (_, _, backup, out) = Self.powerLoss(durable: true, primaryAfter: nine, backupAfter: nine)
        #expect(Self.promotions(out).first == backup)
    }

    @Test func withoutJournalsTheControllerWaitsRatherThanPromoteAnEmptiedServer() {
        let (controller, _, _, out) = Self.powerLoss(durable: false, primaryAfter: .start, backupAfter: .start)
        #expect(Self.promotions(out).isEmpty)
        #expect(controller.waitingReason != nil)
    }

    @Test func aJournaledBackupBackWithLessLostItsDiskAndTheFormerPrimaryTakesOver() {
        // The backup reports less than before its restart: its disk was replaced. The former
        // primary, back on its journal with everything it acknowledged, is promoted again.
        let nine = LogPosition(epoch: 1, index: 9)
        let (_, primary, _, out) = Self.powerLoss(durable: true, primaryAfter: nine, backupAfter: .start)
        let promoted = Self.promotions(out)
        #expect(!promoted.isEmpty)
        #expect(promoted.allSatisfy { $0 == primary })
    }
}
