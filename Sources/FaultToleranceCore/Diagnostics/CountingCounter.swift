package import Metrics
import Synchronization

/// A swift-metrics counter that also keeps its total, for a public property tests and
/// programs can read without a metrics backend.
package final class CountingCounter: Sendable {
    private let counter: Counter
    private let total = Atomic<Int>(0)

    package init(_ counter: Counter) {
        self.counter = counter
    }

    package func increment() {
        counter.increment()
        total.add(1, ordering: .relaxed)
    }

    package var value: Int { total.load(ordering: .relaxed) }
}
