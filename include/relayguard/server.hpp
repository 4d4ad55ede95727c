// SPDX-License-Identifier: MIT
// server.hpp - the listeners and connections: policy requests in, replies out.
//
// Server owns the listening sockets and one worker thread per configured thread, each with its
// own io_context (share nothing): the acceptors hand each new connection to the next worker,
// where it lives in one coroutine until it closes. A connection carries any number of
// requests, answered in order. Each worker holds its own pointer to the current Snapshot;
// reload() hands a new one to every worker, and a request uses the snapshot it started with.
// SECURITY: peers are untrusted; input bounded by the snapshot's ParserLimits; a broken request
// closes that connection without a reply (SMTPD_POLICY_README) and no other.
// Thread-safety: every public member may be called from any one thread (the daemon's main).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <relayguard/policy.hpp>

namespace relayguard {

class Metrics;

class Server {
public:
    explicit Server(std::shared_ptr<const Snapshot> snapshot);
    ~Server(); // stop()s and joins if still running
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    // bind - open every listener of the snapshot's server.listen. UNIX sockets: a stale socket
    // file is replaced; a socket another live process still accepts on, or a path that is not
    // a socket, is an error. Throws std::runtime_error naming the endpoint (startup edge).
    void bind();

    // endpoints - what is bound, as "inet:127.0.0.1:34567" (the real port if 0 was asked for)
    // or "unix:/path". Valid after bind().
    std::vector<std::string> endpoints() const;

    // set_metrics - count into `metrics` (metrics.hpp), e.g. the one a MetricsHttpServer
    // serves. Before start(); without it the Server counts into a Metrics of its own.
    void set_metrics(std::shared_ptr<Metrics> metrics);

    // start - begin accepting on the worker threads; returns at once.
    void start();

    // reload - serve new requests with `snapshot`. Listener and thread settings are read only at
    // bind()/start(); a change to them is logged as needing a restart.
    void reload(std::shared_ptr<const Snapshot> snapshot);

    // stop - stop accepting, let connections finish the requests they have received (up to the
    // config's shutdown_timeout), close them, then end the workers. Returns at once; wait()
    // blocks until done. Idempotent.
    void stop();
    void wait();

    // open_connections - connections open now, over all workers.
    std::size_t open_connections() const noexcept;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace relayguard
