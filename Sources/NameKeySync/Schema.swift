/// The layouts a store's records have had, version 1 to ``latest``, and how each becomes the
/// next.
///
/// Records are compared through the form the newest version gives them
/// (``fingerprint(of:)``): a version-1 record and its migration to version 2 compare equal, so a
/// sync between stores of different versions moves only real differences, and each record is
/// migrated on arrival to the version of the store it lands in (``migrate(_:to:)``). Migrations
/// only go forward.
///
/// ```swift
/// let schema = try Schema(migrations: [
///     Migration(.renameField(from: "qty", to: "quantity"), .addField("unit", default: "pcs")),
///     Migration(.removeField("legacy"), .renameKey { "sku:" + $0 }),
/// ])
/// ```
public struct Schema: Sendable {
    /// The migrations: `migrations[0]` takes version 1 to version 2, and so on.
    public let migrations: [Migration]

    /// The newest version.
    public var latest: Int { migrations.count + 1 }

    /// Creates a schema of `migrations.count + 1` versions.
    public init(migrations: [Migration] = []) {
        self.migrations = migrations
    }

    /// Whether `version` is one of this schema's.
    public func knows(_ version: Int) -> Bool { version >= 1 && version <= latest }

    /// `record` migrated forward to `version`.
    ///
    /// - Throws: ``KeySyncError/Code/schema`` if either version is unknown or `version` is older
    ///   than the record's (migrations only go forward).
    public func migrate(_ record: NameKeyRecord, to version: Int) throws(KeySyncError) -> NameKeyRecord {
        guard knows(record.version), knows(version) else {
            throw KeySyncError(
                .schema,
                detail: "record \(record.key) at version \(record.version), asked for \(version); "
                    + "this schema knows 1...\(latest)")
        }
        guard version >= record.version else {
            throw KeySyncError(
                .schema, detail: "record \(record.key) is at version \(record.version), newer than \(version)")
        }
        var migrated = record
        for step in record.version..<version {
            for change in migrations[step - 1].changes { change.apply(to: &migrated) }
            migrated.version = step + 1
        }
        return migrated
    }

    /// The fingerprint of `record` in the form the newest version gives it: equal for a record
    /// and any of its migrations.
    public func fingerprint(of record: NameKeyRecord) throws(KeySyncError) -> Fingerprint {
        if record.version == latest { return Fingerprint(of: record) }
        return Fingerprint(of: try migrate(record, to: latest))
    }
}

/// One version step: changes applied in order.
public struct Migration: Sendable {
    /// The changes.
    public let changes: [Change]

    /// Creates a step from its changes, applied in order.
    public init(_ changes: Change...) { self.changes = changes }

    /// Creates a step from its changes, applied in order.
    public init(changes: [Change]) { self.changes = changes }

    /// One change to every record.
    public enum Change: Sendable {
        /// A new field, holding `default` in every record that lacks it.
        case addField(String, default: String)
        /// A field dropped from every record.
        case removeField(String)
        /// A field renamed (a record that already has `to` keeps its value there).
        case renameField(from: String, to: String)
        /// Every name key rewritten (must be injective over the keys a store holds).
        case renameKey(@Sendable (String) -> String)
        /// A field's value rewritten, when the record has the field.
        case transform(String, @Sendable (String) -> String)

        func apply(to record: inout NameKeyRecord) {
            switch self {
            case .addField(let name, let value):
                if record.fields[name] == nil { record.fields[name] = value }
            case .removeField(let name):
                record.fields[name] = nil
            case .renameField(let from, let to):
                if let value = record.fields.removeValue(forKey: from), record.fields[to] == nil {
                    record.fields[to] = value
                }
            case .renameKey(let rename):
                record.key = rename(record.key)
            case .transform(let name, let transform):
                if let value = record.fields[name] { record.fields[name] = transform(value) }
            }
        }
    }
}

extension Schema {
    /// The schema `ftctl keysync` and the demo use: an inventory whose version 2 renames `qty`
    /// to `quantity` and adds `unit`, and whose version 3 drops `legacy`, prefixes keys with
    /// `sku:` and upper-cases `unit`.
    public static let inventory = Schema(migrations: [
        Migration(.renameField(from: "qty", to: "quantity"), .addField("unit", default: "pcs")),
        Migration(
            .removeField("legacy"), .renameKey { "sku:" + $0 },
            .transform("unit") { $0.uppercased() }),
    ])
}
