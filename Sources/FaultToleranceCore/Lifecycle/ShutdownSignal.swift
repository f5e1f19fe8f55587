import ServiceLifecycle

/// Suspends until the task is cancelled or a `ServiceGroup` shuts down gracefully.
///
/// ServiceLifecycle's `gracefulShutdown()` does the same but wakes its waiter from an
/// unstructured `Task {}`, which runs on the global pool even under a simulation's
/// executor; this one resumes the waiter directly from whoever signals, so the services run
/// deterministically in simulation.
package func parkUntilShutdown() async {
    let (signal, finish) = AsyncStream.makeStream(of: Never.self)
    await withGracefulShutdownHandler {
        await withTaskCancellationHandler {
            for await _ in signal {}
        } onCancel: {
            finish.finish()
        }
    } onGracefulShutdown: {
        finish.finish()
    }
}
