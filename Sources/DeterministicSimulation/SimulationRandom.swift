import FaultToleranceCore

/// The simulator's own pseudo-random generator: xoshiro256** seeded through SplitMix64.
///
/// Not the system generator: a simulation must produce the same schedule from the same seed
/// on every machine and every run, so a failure can be replayed. xoshiro256** (Blackman and
/// Vigna, 2018) is fast, passes BigCrush, and its state is four words.
public struct SimulationRandom: RandomNumberGenerator, Sendable {
    private var s0: UInt64
    private var s1: UInt64
    private var s2: UInt64
    private var s3: UInt64

    /// Creates a generator whose whole output is determined by `seed`.
    public init(seed: UInt64) {
        var mixer = seed
        func splitMix() -> UInt64 {
            mixer &+= 0x9E37_79B9_7F4A_7C15
            var z = mixer
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s0 = splitMix()
        s1 = splitMix()
        s2 = splitMix()
        s3 = splitMix()
    }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        let result = ((s1 &* 5) << 7 | (s1 &* 5) >> 57) &* 9
        let t = s1 << 17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = (s3 << 45) | (s3 >> 19)
        return result
    }

    /// A new generator for a sub-component (a disk, a node), so adding draws in one component
    /// does not shift the schedule of the others more than necessary.
    public mutating func split() -> SimulationRandom {
        SimulationRandom(seed: next())
    }

    /// `true` with probability `probability` (clamped to 0...1).
    public mutating func chance(_ probability: Double) -> Bool {
        guard probability > 0 else { return false }
        guard probability < 1 else { return true }
        return Double(next() >> 11) * 0x1.0p-53 < probability
    }

    /// A duration drawn uniformly from `range`.
    public mutating func duration(in range: ClosedRange<Duration>) -> Duration {
        let low = range.lowerBound.nanoseconds
        let high = range.upperBound.nanoseconds
        guard high > low else { return range.lowerBound }
        return .nanoseconds(Int64.random(in: low...high, using: &self))
    }
}
