import FaultToleranceCore
import Testing

@Suite("AsyncQueue: AsyncStream's semantics where the chain runtimes rely on them")
struct AsyncQueueTests {
    @Test("elements arrive in the order yielded, and after finish the buffered ones still come, then nil")
    func orderAndFinish() async {
        let queue = AsyncQueue<Int>()
        for value in 1...5 { #expect(queue.yield(value)) }
        queue.finish()
        #expect(!queue.yield(6))
        var seen: [Int] = []
        for await value in queue { seen.append(value) }
        #expect(seen == [1, 2, 3, 4, 5])
        #expect(await queue.next() == nil)
    }

    @Test("a consumer waiting for an element is handed the next one yielded, from another task")
    func waitingConsumer() async {
        let queue = AsyncQueue<Int>()
        async let first = queue.next()
        async let second: Void = {
            // Whichever runs first, the element reaches the consumer: yielded before it waits,
            // it is buffered; after, it resumes the waiting consumer.
            await Task.yield()
            queue.yield(42)
        }()
        _ = await second
        #expect(await first == 42)
    }

    @Test("with a limit, an element yielded while the limit wait is dropped and reported")
    func limitDropsNewest() async {
        let queue = AsyncQueue<Int>(limit: 3)
        #expect((1...5).map { queue.yield($0) } == [true, true, true, false, false])
        #expect(await queue.next() == 1)
        #expect(queue.yield(6))
        queue.finish()
        var rest: [Int] = []
        for await value in queue { rest.append(value) }
        #expect(rest == [2, 3, 6])
    }

    @Test("cancelling the waiting consumer gives it nil and ends the queue")
    func cancellationEnds() async {
        let queue = AsyncQueue<Int>()
        let consumer = Task { await queue.next() }
        consumer.cancel()
        #expect(await consumer.value == nil)
        #expect(!queue.yield(1))
        #expect(await queue.next() == nil)
    }

    @Test("consumers waiting together each get their own element, and finish releases every one")
    func severalConsumers() async {
        let queue = AsyncQueue<Int>()
        let consumers = (0..<3).map { _ in Task { await queue.next() } }
        // Until all three wait (bounded: a queue that keeps one waiter never gets there).
        var spins = 0
        while queue.consumersWaiting < 3, spins < 1_000_000 {
            spins += 1
            await Task.yield()
        }
        #expect(queue.consumersWaiting == 3)
        queue.yield(7)
        queue.yield(8)
        queue.finish()
        var got: [Int?] = []
        for consumer in consumers { got.append(await consumer.value) }
        #expect(got.compactMap { $0 }.sorted() == [7, 8])
        #expect(got.filter { $0 == nil }.count == 1)
    }

    @Test("many producers on other threads: every element arrives once")
    func manyProducers() async {
        let queue = AsyncQueue<Int>()
        await withTaskGroup(of: Void.self) { group in
            for producer in 0..<4 {
                group.addTask { for index in 0..<1000 { queue.yield(producer * 1000 + index) } }
            }
            group.addTask {
                var seen = Set<Int>()
                while seen.count < 4000, let value = await queue.next() { seen.insert(value) }
                #expect(seen == Set(0..<4000))
            }
        }
    }
}
