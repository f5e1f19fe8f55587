public import FaultToleranceCore

/// One element's registers and the pure rules that change them: a signal (raised here or
/// received from a neighbour) and the current registers give the new registers and the signals
/// to forward. No clock, no I/O: the runtime (``ChainElement``) sends what this returns.
///
/// Rules:
/// - Applying a received signal merges the register it carries into ours
///   (``ChainRegister/merge(_:)``), then forwards the signal in its direction to our neighbour
///   on that side, carrying our merged register — applied first, forwarded second.
/// - A signal whose register is older than ours in generation and newer in no drive register
///   is stale: counted and dropped, never applied.
/// - Only the owner changes its drive register; a membership change (link, unlink, rejoin at the
///   tail) takes the next epoch with this element as proposer.
public struct RegisterMachine: Sendable {
    /// Planted bugs for the simulation to catch; never set outside it.
    public enum Bug: String, Sendable, CaseIterable {
        /// Forward a received signal with the register held before applying it.
        case forwardBeforeApply = "forward-before-apply"
    }

    /// A message to send.
    public struct Outbound: Sendable, Hashable {
        /// The message.
        public var message: ChainMessage
        /// Its destination.
        public var to: NodeID
    }

    /// This element.
    public let node: NodeID
    /// The chain state register (it holds this element's drive register too).
    public private(set) var chain: ChainRegister
    /// Signals applied, stale ones dropped, malformed ones refused.
    public private(set) var applied = 0
    /// Stale signals and registers dropped.
    public private(set) var stale = 0
    /// A planted bug.
    public var bug: Bug?
    /// This element's incarnation, written into the generations it proposes.
    public let incarnation: UInt64

    /// Starts from `chain`, which must list `node`; `incarnation` grows with every start of
    /// the element (see ``ChainGeneration/incarnation``).
    public init(node: NodeID, chain: ChainRegister, incarnation: UInt64 = 0) throws(ChainError) {
        guard chain.member(node) != nil else {
            throw ChainError(.invalidConfiguration, element: node, detail: "the chain register does not list it")
        }
        self.node = node
        self.chain = chain
        self.incarnation = incarnation
    }

    /// This element's drive register.
    public var drive: DriveRegister {
        chain.member(node)?.drive ?? DriveRegister(driveID: 0, capacity: 0, state: .absent)
    }

    /// Whether this element is linked into the live chain.
    public var isLinked: Bool { chain.member(node)?.linked ?? false }

    /// Changes this element's drive register (raising its version) and returns the signal to
    /// send both ways.
    public mutating func changeDrive(_ kind: SignalKind, _ change: (inout DriveRegister) -> Void) -> [Outbound] {
        guard let index = chain.members.firstIndex(where: { $0.node == node }) else { return [] }
        var register = chain.members[index].drive
        change(&register)
        register.version = chain.members[index].drive.version + 1
        register.incarnation = incarnation
        chain.members[index].drive = register
        return emit(kind, subject: node)
    }

    /// Proposes a membership in which `subject` is linked or not (a new epoch with this element
    /// as proposer); a rejoining element in mirror mode moves to the end of the chain. Returns
    /// the signal to send both ways, and to `subject` itself.
    public mutating func propose(linking subject: NodeID, linked: Bool, drive: DriveRegister? = nil) -> [Outbound] {
        var members = chain.members
        if let index = members.firstIndex(where: { $0.node == subject }) {
            var member = members[index]
            member.linked = linked
            if let drive, drive.isNewer(than: member.drive) { member.drive = drive }
            if linked && chain.mode == .mirror {
                members.remove(at: index)
                members.append(member)
            } else {
                members[index] = member
            }
        } else if let drive, linked, members.count < ChainRegister.maximumElements {
            members.append(ChainMember(node: subject, linked: true, drive: drive))
        } else {
            return []
        }
        chain.generation = ChainGeneration(epoch: chain.generation.epoch + 1, proposer: node, incarnation: incarnation)
        chain.members = members
        var out = emit(linked ? .linkUp : .linkDown, subject: subject)
        if subject != node, !out.contains(where: { $0.to == subject }) {
            out.append(
                Outbound(
                    message: .signal(
                        ChainSignal(
                            kind: linked ? .linkUp : .linkDown, subject: subject, origin: node, direction: .down,
                            register: chain)), to: subject))
        }
        return out
    }

    /// A signal raised here about `subject`, sent up and down.
    public func emit(_ kind: SignalKind, subject: NodeID) -> [Outbound] {
        var out: [Outbound] = []
        if let up = chain.predecessor(of: node) {
            out.append(
                Outbound(
                    message: .signal(
                        ChainSignal(kind: kind, subject: subject, origin: node, direction: .up, register: chain)),
                    to: up))
        }
        if let down = chain.successor(of: node) {
            out.append(
                Outbound(
                    message: .signal(
                        ChainSignal(kind: kind, subject: subject, origin: node, direction: .down, register: chain)),
                    to: down))
        }
        // Elements cut out of the chain are on no signal's path: they get it directly.
        for member in chain.members
        where !member.linked && member.node != node && !out.contains(where: { $0.to == member.node }) {
            out.append(
                Outbound(
                    message: .signal(
                        ChainSignal(kind: kind, subject: subject, origin: node, direction: [], register: chain)),
                    to: member.node))
        }
        return out
    }

    /// Applies a signal received from `sender` and returns the forwards (and, for identify, the
    /// answer to its origin). Throws ``ChainError/Code/stale`` for a stale signal.
    public mutating func receive(_ signal: ChainSignal, from sender: NodeID) throws(ChainError) -> [Outbound] {
        let before = chain
        if isStale(signal.register) {
            stale += 1
            throw ChainError(
                .stale, element: sender,
                detail: "signal \(signal.kind) of generation \(signal.register.generation), ours is \(chain.generation)"
            )
        }
        let mine = drive
        chain.merge(signal.register)
        keepSelf(mine)
        applied += 1
        var out: [Outbound] = []
        if signal.kind == .identify, signal.origin != node {
            out.append(Outbound(message: .registers(chain, applied: 0, reply: false), to: signal.origin))
        }
        guard Int(signal.hops) < ChainRegister.maximumElements else { return out }
        let carried = bug == .forwardBeforeApply ? before : chain
        var next = signal
        next.hops += 1
        next.register = carried
        if signal.direction.contains(.down), let down = chain.successor(of: node), down != sender {
            next.direction = .down
            out.append(Outbound(message: .signal(next), to: down))
        }
        if signal.direction.contains(.up), let up = chain.predecessor(of: node), up != sender {
            next.direction = .up
            out.append(Outbound(message: .signal(next), to: up))
        }
        // We knew something the sender did not: send it back the way the signal came, so
        // what lies behind us reaches the other side too (every element converges within two
        // passes of the chain).
        if chain != signal.register, Int(signal.hops) + 1 < ChainRegister.maximumElements,
            !out.contains(where: { $0.to == sender })
        {
            var back = signal
            back.hops += 1
            back.register = chain
            back.direction = signal.direction == .down ? .up : (signal.direction == .up ? .down : .both)
            out.append(Outbound(message: .signal(back), to: sender))
        }
        // A membership change that gave us a new neighbour: tell it what we hold.
        for neighbour in [chain.predecessor(of: node), chain.successor(of: node)].compactMap({ $0 })
        where neighbour != sender && !out.contains(where: { $0.to == neighbour })
            && neighbour != before.predecessor(of: node) && neighbour != before.successor(of: node)
        {
            out.append(Outbound(message: .registers(chain, applied: 0, reply: false), to: neighbour))
        }
        return out
    }

    /// Merges a register received in an exchange. Returns whether ours changed; throws
    /// ``ChainError/Code/stale`` (counted) for a register that is older and adds nothing.
    @discardableResult
    public mutating func exchange(_ register: ChainRegister, from sender: NodeID) throws(ChainError) -> Bool {
        if register == chain { return false }
        if isStale(register) {
            stale += 1
            throw ChainError(
                .stale, element: sender,
                detail: "register of generation \(register.generation), ours is \(chain.generation)")
        }
        let mine = drive
        let changed = chain.merge(register)
        keepSelf(mine)
        return changed
    }

    /// After a merge: a membership that does not list this element (it is new to the chain, and
    /// its own proposal lost) would leave it without a drive register. It stays, unlinked, and
    /// its next proposal (a span element relinks itself on every change; a mirror one asks the
    /// tail to catch it up) adds it.
    private mutating func keepSelf(_ drive: DriveRegister) {
        if chain.member(node) == nil, chain.members.count < ChainRegister.maximumElements {
            chain.members.append(ChainMember(node: node, linked: false, drive: drive))
        }
    }

    /// Older in generation and newer in no drive register: nothing in it to apply.
    func isStale(_ register: ChainRegister) -> Bool {
        guard register.generation < chain.generation else { return false }
        for member in register.members {
            if let ours = chain.member(member.node), member.drive.isNewer(than: ours.drive) { return false }
        }
        return true
    }
}
