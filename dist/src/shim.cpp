// C ABI over PyTorch's c10d (the engine under torch.distributed / DDP) for dspnet-dist.
//
// What it uses from libtorch_cpu.so (torch 2.13 wheel): TCPStore (rendezvous), PrefixStore,
// ProcessGroupGloo (CPU collectives) and, when built with DSPNET_WITH_NCCL, ProcessGroupNCCL
// from libtorch_cuda.so (created in shim_nccl.cpp). The torch wheel ships c10d's headers but not gloo's; gloo types appear
// in ProcessGroupGloo.hpp only behind shared_ptr/unique_ptr (class layout independent of the
// gloo version), so Debian's libgloo-dev headers are enough to compile it (see build.rs).
//
// Every entry point catches C++ exceptions and returns a malloc'd one-line message (NULL on
// success) that the caller frees with dspnet_dist_free_string.

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/headeronly/version.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#ifdef DSPNET_WITH_NCCL
// shim_nccl.cpp (compiled only where CUDA's and NCCL's headers are found).
c10::intrusive_ptr<c10d::Backend> dspnet_make_nccl(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                                   int world, std::chrono::milliseconds timeout);
#endif

namespace {

using ms = std::chrono::milliseconds;

struct Group {
  std::string host;
  uint16_t port = 0;
  int rank = 0;
  int world = 1;
  ms timeout{300000};
  std::string prefix;  // key namespace of this job attempt in the store
  c10::intrusive_ptr<c10d::Store> store;  // TCPStore (server on rank 0 unless torchrun's agent hosts it)
  c10::intrusive_ptr<c10d::Backend> backend;
  std::thread heartbeat;
  std::atomic<bool> stop{false};

  ~Group() { stop_heartbeat(); }

  void stop_heartbeat() {
    stop = true;
    if (heartbeat.joinable()) heartbeat.join();
  }

  void all_reduce_sum(at::Tensor& t) {
    std::vector<at::Tensor> v{t};
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    backend->allreduce(v, o)->wait();
  }
};

struct Handle {
  std::shared_ptr<Group> g;
};

char* dup(const std::string& s) {
  std::string one = s;
  for (auto& c : one)
    if (c == '\n' || c == '\r') c = ' ';
  char* p = static_cast<char*>(std::malloc(one.size() + 1));
  std::memcpy(p, one.c_str(), one.size() + 1);
  return p;
}

template <typename F>
char* guarded(F&& f) {
  try {
    f();
    return nullptr;
  } catch (const c10::Error& e) {
    return dup(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return dup(e.what());
  } catch (...) {
    return dup("unknown C++ exception in c10d");
  }
}

// Gradient of y = sum over ranks of x_r: dL/dx_r = sum over ranks of dL_s/dy (every rank's loss
// depends on y), i.e. the backward pass is the same all-reduce applied to the incoming gradient.
struct AllReduceSumBackward : public torch::autograd::Node {
  std::shared_ptr<Group> g;
  explicit AllReduceSumBackward(std::shared_ptr<Group> group) : g(std::move(group)) {}
  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    at::Tensor gi;
    {
      at::NoGradGuard no_grad;
      gi = grads[0].defined() ? grads[0].contiguous().clone() : grads[0];
      if (gi.defined()) g->all_reduce_sum(gi);
    }
    return {gi};
  }
  std::string name() const override { return "DspnetAllReduceSumBackward"; }
};

}  // namespace

extern "C" {

void dspnet_dist_free_string(char* s) { std::free(s); }

// Creates the TCPStore (server on rank 0 unless `agent_store`: then torchrun's agent hosts it
// and every rank is a client) and a Gloo ("gloo") or NCCL ("nccl") process group.
char* dspnet_dist_new(const char* host, uint16_t port, int rank, int world, int64_t timeout_ms,
                      int agent_store, const char* prefix, const char* backend, void** out) {
  return guarded([&] {
    auto g = std::make_shared<Group>();
    g->host = host;
    g->port = port;
    g->rank = rank;
    g->world = world;
    g->timeout = ms(timeout_ms);
    g->prefix = prefix;
    c10d::TCPStoreOptions o;
    o.port = port;
    o.isServer = rank == 0 && !agent_store;
    o.numWorkers = world;
    o.waitWorkers = true;  // clients announce themselves; only the server waits for all
    o.timeout = g->timeout;
    o.multiTenant = true;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), o);
    g->store = c10::make_intrusive<c10d::PrefixStore>(g->prefix, tcp);
    auto pg_store = c10::make_intrusive<c10d::PrefixStore>("pg/", g->store);
    std::string b(backend);
    if (b == "gloo") {
      auto opts = c10d::ProcessGroupGloo::Options::create(g->timeout);
      // As torch.distributed: GLOO_SOCKET_IFNAME=eth0[,eth1] picks interfaces, else the
      // address this host's name resolves to (loopback when it does not resolve).
      const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
      if (ifname != nullptr && *ifname != '\0') {
        std::stringstream ss(ifname);
        std::string item;
        while (std::getline(ss, item, ','))
          if (!item.empty()) opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(item));
      } else {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      g->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(pg_store, rank, world, opts);
    } else if (b == "nccl") {
#ifdef DSPNET_WITH_NCCL
      g->backend = dspnet_make_nccl(pg_store, rank, world, g->timeout);
#else
      throw std::runtime_error(
          "this build of dspnet-dist has no NCCL (libtorch without CUDA or NCCL headers not found at build time); use the gloo backend");
#endif
    } else {
      throw std::runtime_error("unknown backend " + b + "; use gloo or nccl");
    }
    // Heartbeat on its own store connection: lets a rank whose collective failed tell which
    // peer stopped (see dspnet_dist_find_dead).
    auto hb = tcp->clone();
    auto key = g->prefix + "heartbeat/" + std::to_string(rank);
    Group* raw = g.get();
    g->heartbeat = std::thread([raw, hb, key] {
      try {
        while (!raw->stop) {
          hb->add(key, 1);
          for (int i = 0; i < 10 && !raw->stop; i++) std::this_thread::sleep_for(ms(100));
        }
      } catch (...) {
        // the store host went away: nothing left to report to
      }
    });
    *out = new Handle{g};
  });
}

// Stops the heartbeat and releases this handle (autograd nodes may keep the group alive until
// their graph is freed).
void dspnet_dist_free(void* h) {
  auto* handle = static_cast<Handle*>(h);
  handle->g->stop_heartbeat();
  delete handle;
}

// Stops the heartbeat only (used before abandoning a failed group without destroying it).
void dspnet_dist_stop_heartbeat(void* h) { static_cast<Handle*>(h)->g->stop_heartbeat(); }

// Sum (avg != 0: mean) of a dense tensor over all ranks, in place.
char* dspnet_dist_all_reduce(void* h, at::Tensor* t, int avg) {
  return guarded([&] {
    auto& g = *static_cast<Handle*>(h)->g;
    at::NoGradGuard no_grad;
    at::Tensor x = *t;
    TORCH_CHECK(x.is_contiguous(), "all_reduce needs a contiguous tensor");
    g.all_reduce_sum(x);
    if (avg) x.div_(g.world);
  });
}

// Copies root's tensor into every rank's, in place.
char* dspnet_dist_broadcast(void* h, at::Tensor* t, int root) {
  return guarded([&] {
    auto& g = *static_cast<Handle*>(h)->g;
    at::NoGradGuard no_grad;
    at::Tensor x = *t;
    TORCH_CHECK(x.is_contiguous(), "broadcast needs a contiguous tensor");
    std::vector<at::Tensor> v{x};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    g.backend->broadcast(v, o)->wait();
  });
}

char* dspnet_dist_barrier(void* h) {
  return guarded([&] {
    auto& g = *static_cast<Handle*>(h)->g;
    c10d::BarrierOptions o;
    g.backend->barrier(o)->wait();
  });
}

// Differentiable sum over ranks: *out = new tensor y = sum_r x_r; backward all-reduces the
// incoming gradient (see AllReduceSumBackward).
char* dspnet_dist_all_reduce_sum_autograd(void* h, const at::Tensor* x, at::Tensor** out) {
  return guarded([&] {
    auto g = static_cast<Handle*>(h)->g;
    at::Tensor y;
    {
      at::NoGradGuard no_grad;
      y = x->detach().contiguous().clone();
      g->all_reduce_sum(y);
    }
    if (torch::autograd::compute_requires_grad(*x)) {
      // autograd nodes are held by std::shared_ptr in torch 2.11 (2.12 assumed alike, not built
      // here) and by c10::intrusive_ptr in torch 2.13
#if TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR < 13
      auto node = std::make_shared<AllReduceSumBackward>(g);
#else
      auto node = c10::make_intrusive<AllReduceSumBackward>(g);
#endif
      node->set_next_edges(torch::autograd::collect_next_edges(*x));
      torch::autograd::set_history(y, node);
    }
    *out = new at::Tensor(std::move(y));
  });
}

// Which peers stopped heart-beating: reads every rank's heartbeat counter through a fresh
// store connection, waits `window_ms`, reads again. dead[r] = 1 when rank r's counter did not
// move (dead[own rank] = 0). Returns an error when the store itself cannot be reached (its host,
// rank 0 or torchrun's agent, is gone).
char* dspnet_dist_find_dead(void* h, int64_t window_ms, int* dead) {
  return guarded([&] {
    auto& g = *static_cast<Handle*>(h)->g;
    c10d::TCPStoreOptions o;
    o.port = g.port;
    o.isServer = false;
    o.waitWorkers = false;
    o.timeout = ms(std::min<int64_t>(window_ms + 2000, g.timeout.count()));
    c10::intrusive_ptr<c10d::Store> s = c10::make_intrusive<c10d::TCPStore>(g.host, o);
    auto read = [&] {
      std::vector<int64_t> v(g.world, 0);
      for (int r = 0; r < g.world; r++)
        if (r != g.rank) v[r] = s->add(g.prefix + "heartbeat/" + std::to_string(r), 0);
      return v;
    };
    auto before = read();
    std::this_thread::sleep_for(ms(window_ms));
    auto after = read();
    for (int r = 0; r < g.world; r++) dead[r] = (r != g.rank && after[r] == before[r]) ? 1 : 0;
  });
}

}  // extern "C"
