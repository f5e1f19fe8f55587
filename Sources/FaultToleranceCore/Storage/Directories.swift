#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Directory operations the storage layer and the journal's directory layout share, with
/// failures as ``StorageError``s that name the path and the system's reason.
package enum Directories {
    /// The names in `directory`, without `.` and `..`.
    package static func list(_ directory: String) throws(StorageError) -> [String] {
        guard let handle = opendir(directory) else {
            throw StorageError(.fileOperationFailed, path: directory, errno: SystemCalls.errno, detail: "opendir")
        }
        defer { closedir(handle) }
        var names: [String] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Whether `path` names a directory.
    package static func isDirectory(_ path: String) -> Bool {
        var status = stat()
        return stat(path, &status) == 0 && (status.st_mode & S_IFMT) == S_IFDIR
    }

    /// Whether anything exists at `path`.
    package static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// Creates `path` and its missing parents (mode 0700), like `mkdir -p`.
    package static func make(_ path: String) throws(StorageError) {
        var current = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            current += "/" + component
            if mkdir(current, 0o700) != 0 && SystemCalls.errno != EEXIST {
                throw StorageError(.fileOperationFailed, path: current, errno: SystemCalls.errno, detail: "mkdir")
            }
        }
        guard isDirectory(path) else {
            throw StorageError(.fileOperationFailed, path: path, errno: ENOTDIR, detail: "mkdir")
        }
    }

    /// Removes `path` and everything under it; what cannot be removed is left.
    package static func removeTree(_ path: String) {
        if isDirectory(path) {
            for name in (try? list(path)) ?? [] { removeTree(path + "/" + name) }
            _ = rmdir(path)
        } else {
            _ = unlink(path)
        }
    }

    /// `fsync`s the directory `path`, so the entries made or renamed in it are durable.
    package static func synchronize(_ path: String) throws(StorageError) {
        let descriptor = open(path.isEmpty ? "." : path, O_RDONLY | O_DIRECTORY)
        guard descriptor >= 0 else {
            throw StorageError(.fileOperationFailed, path: path, errno: SystemCalls.errno, detail: "open")
        }
        defer { _ = SystemCalls.close(descriptor) }
        guard SystemCalls.live.fsync(descriptor) == 0 else {
            throw StorageError(.synchronizeFailed, path: path, errno: SystemCalls.errno, detail: "fsync of a directory")
        }
    }
}
