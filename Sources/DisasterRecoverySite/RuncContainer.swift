public import DisasterRecovery
import Foundation

/// A workload in an OCI container run by `runc` (Debian's `runc`; this machine's cgroup v1
/// layout works with it), for a recovery's "run at once" process: the container shares the
/// host's network (its service answers on the host's ports) and sees each lazy volume as a
/// file bound into it.
///
/// The calls run `runc` and wait for it: call them from a thread of your own, or through
/// NIO's thread pool, not from Swift's cooperative pool.
public final class RuncContainer: Sendable {
    /// A file or directory of the host bound into the container.
    public struct Bind: Sendable, Hashable, Codable {
        /// The host path.
        public var source: String
        /// The path inside the container.
        public var destination: String

        /// Creates a bind.
        public init(source: String, destination: String) {
            self.source = source
            self.destination = destination
        }
    }

    /// The container's id (`runc list` shows it).
    public let id: String
    /// The bundle directory: `config.json` and the root filesystem.
    public let bundle: String
    /// The `runc` executable.
    public let runc: String

    /// Writes a bundle at `bundle` (its root filesystem at `bundle/rootfs`, which must exist)
    /// whose process runs `command` with `environment`, sees `binds`, and shares the host's
    /// network. `id`: 1 to 64 of `A–Z a–z 0–9 . _ -`.
    public init(
        id: String, bundle: String, command: [String], environment: [String: String] = [:], binds: [Bind] = [],
        runc: String = "/usr/sbin/runc"
    ) throws(RecoveryError) {
        try RecoveryPlan.checkName(id, "container")
        guard !command.isEmpty else { throw RecoveryError(.invalidField, "container \(id) has no command") }
        self.id = id
        self.bundle = bundle
        self.runc = FileManager.default.isExecutableFile(atPath: runc) ? runc : "/usr/bin/runc"
        let mounts: [[String: Any]] =
            [
                ["destination": "/proc", "type": "proc", "source": "proc"],
                [
                    "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                    "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
                ],
                [
                    "destination": "/dev/pts", "type": "devpts", "source": "devpts",
                    "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
                ],
                ["destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]],
            ]
            + binds.map {
                ["destination": $0.destination, "type": "bind", "source": $0.source, "options": ["rbind", "rw"]]
            }
        let config: [String: Any] = [
            "ociVersion": "1.0.2",
            "process": [
                "terminal": false, "user": ["uid": 0, "gid": 0], "args": command,
                "env": ["PATH=/bin:/usr/bin:/sbin"]
                    + environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" },
                "cwd": "/", "noNewPrivileges": true,
                "capabilities": [
                    "bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"],
                    "effective": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"],
                    "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"],
                ],
                "rlimits": [["type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024]],
            ],
            "root": ["path": "rootfs", "readonly": false],
            "hostname": id,
            "mounts": mounts,
            "linux": [
                "resources": ["devices": [["allow": false, "access": "rwm"]]],
                // No network namespace: the workload serves on the host's ports.
                "namespaces": [["type": "pid"], ["type": "ipc"], ["type": "uts"], ["type": "mount"]],
                "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
                "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
            ],
        ]
        do {
            let data = try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
            try data.write(to: URL(fileURLWithPath: bundle + "/config.json"))
        } catch {
            throw RecoveryError(.storage, "writing \(bundle)/config.json: \(error)")
        }
    }

    /// Makes `path` a root filesystem of Debian's static busybox (`/bin/busybox` and its
    /// applets as links) with `files` (path inside → contents; `executable` ones mode 0755).
    public static func busyboxRoot(
        at path: String, files: [String: (contents: String, executable: Bool)] = [:],
        busybox: String = "/bin/busybox"
    ) throws(RecoveryError) {
        let manager = FileManager.default
        do {
            for directory in ["bin", "proc", "dev", "sys", "tmp", "etc", "data", "www/cgi-bin"] {
                try manager.createDirectory(atPath: path + "/" + directory, withIntermediateDirectories: true)
            }
            let target = path + "/bin/busybox"
            if !manager.fileExists(atPath: target) { try manager.copyItem(atPath: busybox, toPath: target) }
            for applet in ["sh", "dd", "cat", "echo", "httpd", "sleep", "ls", "head", "tr", "sync"] {
                let link = path + "/bin/" + applet
                if (try? manager.destinationOfSymbolicLink(atPath: link)) == nil {
                    try manager.createSymbolicLink(atPath: link, withDestinationPath: "busybox")
                }
            }
            for (file, content) in files {
                let full = path + "/" + file
                try manager.createDirectory(
                    atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                try content.contents.write(toFile: full, atomically: true, encoding: .utf8)
                try manager.setAttributes([.posixPermissions: content.executable ? 0o755 : 0o644], ofItemAtPath: full)
            }
        } catch {
            throw RecoveryError(.storage, "preparing the root filesystem at \(path): \(error)")
        }
    }

    /// Runs `runc` with `arguments` and returns its output; throws with the output's tail when it fails.
    @discardableResult
    private func runc(_ arguments: [String]) throws(RecoveryError) -> String {
        // Output to a file, not a pipe: a detached container inherits runc's standard output,
        // and a pipe would then never reach its end.
        let log = bundle + "/runc-\(arguments.first ?? "call").log"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: runc)
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: bundle)
        process.standardInput = FileHandle.nullDevice
        do {
            FileManager.default.createFile(atPath: log, contents: nil)
            let output = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            defer { try? output.close() }
            process.standardOutput = output
            process.standardError = output
            try process.run()
        } catch {
            throw RecoveryError(.storage, "runc could not start: \(error)")
        }
        process.waitUntilExit()
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        guard process.terminationStatus == 0 else {
            throw RecoveryError(
                .storage,
                "runc \(arguments.joined(separator: " ")) exited \(process.terminationStatus): \(output.suffix(400))")
        }
        return output
    }

    /// Starts the container, detached (`runc run -d`).
    public func start() throws(RecoveryError) {
        try runc(["run", "-d", "--bundle", bundle, "--pid-file", bundle + "/container.pid", id])
    }

    /// Freezes every process of the container (`runc pause`, the cgroup freezer).
    public func pause() throws(RecoveryError) { try runc(["pause", id]) }

    /// Thaws it (`runc resume`).
    public func resume() throws(RecoveryError) { try runc(["resume", id]) }

    /// The container's status (`running`, `paused`, `stopped`), or `nil` when runc does not know it.
    public var status: String? {
        guard let output = try? runc(["state", id]),
            let object = try? JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any]
        else { return nil }
        return object["status"] as? String
    }

    /// Kills and deletes the container; quiet when it is already gone.
    public func remove() {
        _ = try? runc(["kill", id, "KILL"])
        _ = try? runc(["delete", "--force", id])
    }
}
