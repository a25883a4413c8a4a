// A minimal parallel-for for decode/probe work: `threads` workers pull indices from a shared
// counter. Exceptions from `fn` are captured and the first one is rethrown after all workers end
// (callers that must never throw catch inside `fn`).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace st::plugins::data_local {

/// Worker count: `requested` if > 0, else every core the machine reports (at least 1).
inline int resolve_threads(int requested) {
    if (requested > 0) return requested;
    return std::max(1u, std::thread::hardware_concurrency());
}

inline void parallel_for(int64_t n, int threads, const std::function<void(int64_t)>& fn) {
    const int workers = static_cast<int>(std::min<int64_t>(std::max(1, threads), std::max<int64_t>(1, n)));
    if (workers <= 1) {
        for (int64_t i = 0; i < n; ++i) fn(i);
        return;
    }
    std::atomic<int64_t> next{0};
    std::exception_ptr error;
    std::mutex error_mutex;
    std::vector<std::thread> pool;
    for (int w = 0; w < workers; ++w) {
        pool.emplace_back([&] {
            for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) {
                try {
                    fn(i);
                } catch (...) {
                    std::lock_guard<std::mutex> lock(error_mutex);
                    if (!error) error = std::current_exception();
                }
            }
        });
    }
    for (auto& t : pool) t.join();
    if (error) std::rethrow_exception(error);
}

}  // namespace st::plugins::data_local
