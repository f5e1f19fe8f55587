import ArgumentParser
import Failover
import FaultToleranceEtcd

/// Which control plane a pair obeys, as the `ftctl failover` commands take it.
struct FailoverControlOptions: ParsableArguments {
    @Option(help: "The control plane: server (the built-in control server, a process) or etcd.")
    var control = "server"
    @Option(help: "etcd's client URL (with --control etcd).") var etcd = "http://127.0.0.1:2379"
    @Option(help: "The pair's name in etcd: its keys go under /ft/failover/NAME/ (with --control etcd).")
    var cluster = "ftctl"

    func validate() throws {
        guard control == "server" || control == "etcd" else {
            throw ValidationError("--control: \(control.debugDescription) is neither server nor etcd")
        }
        guard usesEtcd else { return }
        guard EtcdGateway(endpoint: etcd) != nil else {
            throw ValidationError("--etcd: \(etcd.debugDescription) is not http://HOST:PORT")
        }
        guard (1...64).contains(cluster.utf8.count),
            cluster.unicodeScalars.allSatisfy({
                $0.properties.isAlphabetic || ("0"..."9").contains($0) || "-_.".unicodeScalars.contains($0)
            })
        else {
            throw ValidationError(
                "--cluster: \(cluster.debugDescription) is not 1 to 64 letters, digits, '-', '_' or '.'")
        }
    }

    /// Whether the pair obeys etcd.
    var usesEtcd: Bool { control == "etcd" }

    /// The gateway to etcd (validated above).
    func gateway() throws -> EtcdGateway {
        guard let gateway = EtcdGateway(endpoint: etcd) else {
            throw CommandFailure("--etcd: \(etcd.debugDescription) is not http://HOST:PORT")
        }
        return gateway
    }

    /// The choice as a value (outside argument parsing).
    var choice: FailoverControlChoice { usesEtcd ? .etcd(endpoint: etcd, cluster: cluster) : .server }

    /// The etcd configuration of the pair, for a lease of `ttl`.
    func configuration(minimumSyncBackups: Int, ttl: Duration = .seconds(1)) -> EtcdControlConfiguration {
        EtcdControlConfiguration(cluster: cluster, ttl: ttl, minimumSyncBackups: minimumSyncBackups)
    }
}

/// Which control plane a pair obeys, as a value a trial carries.
enum FailoverControlChoice: Equatable {
    /// The built-in control server, a process of its own.
    case server
    /// etcd at `endpoint`, the pair's keys under `cluster`.
    case etcd(endpoint: String, cluster: String)

    /// Whether the pair obeys etcd.
    var usesEtcd: Bool { self != .server }

    /// The arguments that give a node process the same choice.
    var arguments: [String] {
        switch self {
        case .server: []
        case .etcd(let endpoint, let cluster): ["--control", "etcd", "--etcd", endpoint, "--cluster", cluster]
        }
    }
}
