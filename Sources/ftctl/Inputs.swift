import ArgumentParser

// Every value a user types is checked before anything runs; a refusal is one line naming the
// option, the value and what is accepted, and exits 64 (ArgumentParser's usage-error status).

/// The most seeds one `simulate` run accepts (a few days at the fastest scenario's rate).
let maximumSeeds = 1_000_000_000

/// The most worker threads a command accepts.
let maximumJobs = 1024

/// Refuses `value` unless `range` holds it (NaN is in no range).
func require<T: Comparable>(_ option: String, _ value: T, in range: ClosedRange<T>) throws {
    guard range.contains(value) else {
        throw ValidationError("\(option) must be in \(range.lowerBound)...\(range.upperBound), got \(value)")
    }
}

/// Refuses an optional value unless it is absent or in `range`.
func require<T: Comparable>(_ option: String, _ value: T?, in range: ClosedRange<T>) throws {
    if let value { try require(option, value, in: range) }
}

/// The longest duration the tool accepts: ten years.
let longestDuration: Duration = .seconds(10 * 365 * 86_400)

/// Parses `250ms`, `10s`, `5m`, `2h` (a bare number means seconds): finite, not negative, at
/// most ten years; anything else is `nil`.
func parseDuration(_ text: String) -> Duration? {
    let units: [(String, Double)] = [("ms", 1e-3), ("s", 1), ("m", 60), ("h", 3600)]
    var number = Substring(text)
    var scale = 1.0
    for (suffix, unitScale) in units where text.hasSuffix(suffix) {
        number = text.dropLast(suffix.count)
        scale = unitScale
        break
    }
    guard let value = Double(number), value.isFinite, value >= 0 else { return nil }
    let seconds = value * scale
    guard seconds <= Double(longestDuration.components.seconds) else { return nil }
    return .nanoseconds(Int64((seconds * 1e9).rounded()))
}

/// Parses a duration option, or refuses it with the accepted format.
func requireDuration(_ option: String, _ text: String) throws -> Duration {
    guard let duration = parseDuration(text) else {
        throw ValidationError(
            "\(option) must be a duration such as 250ms, 30s, 5m or 2h, at least 0 and at most 10 years; got \(text)")
    }
    return duration
}

/// A failure at run time rather than a usage error (a missing journal, a directory in the
/// way): ArgumentParser prints it as one `Error:` line, without the usage, and exits 1.
struct CommandFailure: Error, CustomStringConvertible {
    /// What went wrong, for people.
    let description: String

    init(_ description: String) { self.description = description }
}
