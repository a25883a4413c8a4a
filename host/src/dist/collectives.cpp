#include "dist/collectives.h"

#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <thread>

#include "st/error.h"
#include "st/log.h"

namespace st::host::dist {

namespace {
constexpr const char* kLog = "host.dist";

std::vector<uint8_t> bytes(const std::string& s) {
    return std::vector<uint8_t>(s.begin(), s.end());
}

bool loopback(const std::string& addr) {
    return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1";
}
}  // namespace

struct Collectives::Impl {
    c10::intrusive_ptr<c10d::Store> store;
    c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
    int64_t step = -1;
};

Collectives::Collectives(const DistEnv& env, std::chrono::seconds timeout)
    : env_(env), timeout_(timeout), impl_(std::make_unique<Impl>()) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(timeout);
    try {
        c10d::TCPStoreOptions o;
        o.port = static_cast<uint16_t>(env.master_port);
        o.isServer = !env.agent_store && env.rank == 0;
        o.numWorkers = env.agent_store ? c10::nullopt : c10::optional<size_t>(env.world_size);
        o.waitWorkers = !env.agent_store;
        o.timeout = ms;
        o.multiTenant = true;
        c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, o);
        if (!env.store_prefix.empty())
            store = c10::make_intrusive<c10d::PrefixStore>(env.store_prefix, store);
        impl_->store = c10::make_intrusive<c10d::PrefixStore>("st", store);
    } catch (const std::exception& e) {
        fail(kLog, "rendezvous",
             "rank {} of {} could not meet the others at MASTER_ADDR:MASTER_PORT {}:{} within "
             "process_group_timeout "
             "{} s ({}): {}",
             env.rank, env.world_size, env.master_addr, env.master_port, timeout.count(),
             env.rank == 0 && !env.agent_store ? "rank 0 hosts the store there: is the port in use?"
                                               : "is rank 0 running, and is the address reachable?",
             e.what());
    }
    try {
        auto opts = c10d::ProcessGroupGloo::Options::create(ms);
        if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
            opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
        else if (loopback(env.master_addr))
            opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
        else
            opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
        // Two threads: gradient buckets reduce while backward goes on (and the tiny control messages
        // never wait behind a large bucket for long).
        opts->threads = 2;
        impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(
            c10::make_intrusive<c10d::PrefixStore>("gloo", impl_->store), env.rank, env.world_size, opts);
    } catch (const std::exception& e) {
        fail(kLog, "rendezvous", "rank {} of {} could not open the Gloo process group at {}:{}: {}", env.rank,
             env.world_size, env.master_addr, env.master_port, e.what());
    }
    report_step(0);
}

Collectives::~Collectives() = default;

void Collectives::failed(const std::string& what, const std::exception& e) {
    // Give the other ranks a moment to leave their word in the store (a rank that failed says why).
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    const std::string ranks = describe_ranks();
    fail(kLog, "collective",
         "{} failed on rank {} of {} at step {}: {}. Another rank stopped or did not answer within "
         "process_group_timeout {} s{}",
         what, env_.rank, env_.world_size, impl_->step, e.what(), timeout_.count(),
         ranks.empty() ? std::string() : "; " + ranks);
}

Collectives::Pending Collectives::all_reduce_sum_async(at::Tensor t, std::string what) {
    std::vector<at::Tensor> v{t};
    c10::intrusive_ptr<c10d::Work> work;
    try {
        work = impl_->group->allreduce(v);
    } catch (const std::exception& e) {
        failed(what, e);
    }
    return [this, work, what = std::move(what)] {
        try {
            work->wait();
        } catch (const std::exception& e) {
            failed(what, e);
        }
    };
}

void Collectives::all_reduce_sum(at::Tensor t, const std::string& what) {
    all_reduce_sum_async(std::move(t), what)();
}

void Collectives::all_reduce_max(at::Tensor t, const std::string& what) {
    std::vector<at::Tensor> v{t};
    try {
        c10d::AllreduceOptions o;
        o.reduceOp = c10d::ReduceOp::MAX;
        impl_->group->allreduce(v, o)->wait();
    } catch (const std::exception& e) {
        failed(what, e);
    }
}

void Collectives::broadcast(at::Tensor t, int root, const std::string& what) {
    std::vector<at::Tensor> v{t};
    try {
        c10d::BroadcastOptions o;
        o.rootRank = root;
        impl_->group->broadcast(v, o)->wait();
    } catch (const std::exception& e) {
        failed(what, e);
    }
}

void Collectives::barrier(const std::string& what) {
    // Gloo's barrier is an all-reduce of nothing: a tiny sum all-reduce fails the same way and
    // names the step.
    all_reduce_sum(at::zeros({1}, at::kFloat), what);
}

void Collectives::all_to_all(at::Tensor out, at::Tensor in, const std::string& what) {
    try {
        std::vector<int64_t> equal;  // empty split sizes: world_size() equal chunks
        impl_->group->alltoall_base(out, in, equal, equal)->wait();
    } catch (const std::exception& e) {
        failed(what, e);
    }
}

void Collectives::report_step(int64_t step) {
    impl_->step = step;
    try {
        impl_->store->set(fmt::format("step/{}", env_.rank), bytes(std::to_string(step)));
    } catch (const std::exception& e) {
        failed("reporting the step to the store", e);
    }
}

void Collectives::report_exit(const std::string& why) {
    try {
        impl_->store->set(fmt::format("exit/{}", env_.rank), bytes(why));
    } catch (const std::exception&) {
    }
}

std::string Collectives::describe_ranks() {
    std::vector<std::string> parts;
    try {
        impl_->store->setTimeout(std::chrono::seconds(2));
        for (int r = 0; r < env_.world_size; ++r) {
            if (r == env_.rank) continue;
            std::string s = fmt::format("rank {}", r);
            const std::string step_key = fmt::format("step/{}", r);
            const std::string exit_key = fmt::format("exit/{}", r);
            if (impl_->store->check({step_key})) {
                auto v = impl_->store->get(step_key);
                s += fmt::format(" last reported step {}", std::string(v.begin(), v.end()));
            }
            if (impl_->store->check({exit_key})) {
                auto v = impl_->store->get(exit_key);
                s += fmt::format(" and left: {}", std::string(v.begin(), v.end()));
            } else {
                s += " and has not said that it left (killed, or still waiting)";
            }
            parts.push_back(s);
        }
    } catch (const std::exception&) {
        return fmt::format(
            "the rendezvous store at {}:{} does not answer{}", env_.master_addr, env_.master_port,
            env_.agent_store ? std::string() : std::string(" (rank 0 hosts it: rank 0 is gone)"));
    }
    return fmt::format("{}", fmt::join(parts, "; "));
}

}  // namespace st::host::dist
