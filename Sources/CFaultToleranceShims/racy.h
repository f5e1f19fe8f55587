// Marks code that reads memory other threads may be writing, on purpose: the live copy reads
// pages while writers run, and a page torn by a write is dirty again and recopied.
// Written for swift-fault-tolerance.
#ifndef FT_RACY_H
#define FT_RACY_H

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FT_UNDER_TSAN 1
#endif
#endif

// ThreadSanitizer would report the intended race; such functions are left uninstrumented.
#if defined(FT_UNDER_TSAN)
#define FT_RACY_READ __attribute__((no_sanitize("thread")))
#else
#define FT_RACY_READ
#endif

#endif
