// SPDX-License-Identifier: MIT
// redis_server.hpp - a real redis-server for integration tests (hiredis test.sh style).
//
// Started from a redis.conf generated in its own TempDir: a UNIX socket always, a loopback TCP
// and/or TLS port on request (TLS certificates made with the openssl command at start). A missing
// redis-server or one that does not come up within 5 s throws: the test fails, never skips.
// Only this object's own child process is ever signalled. Not thread-safe.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>

#include "testing/test_support.hpp"

namespace relayguard::testing {

class RedisServer {
public:
    struct Options {
        std::string requirepass;       // password of the default user; empty: none
        std::string acl_user;          // an extra ACL user with every command and key; empty: none
        std::string acl_password;
        bool tcp = false;              // also listen on a free 127.0.0.1 port
        bool tls = false;              // also listen with TLS on a free 127.0.0.1 port
        bool tls_client_certs = false; // tls-auth-clients yes (a client certificate is made too)
    };

    RedisServer() : RedisServer(Options{}) {}
    explicit RedisServer(Options options);
    ~RedisServer();
    RedisServer(const RedisServer&) = delete;
    RedisServer& operator=(const RedisServer&) = delete;

    std::string unix_path() const { return (dir_ / "redis.sock").string(); }
    int tcp_port() const noexcept { return tcp_port_; }
    int tls_port() const noexcept { return tls_port_; }
    std::string ca_file() const { return (dir_ / "ca.crt").string(); }
    std::string client_cert_file() const { return (dir_ / "client.crt").string(); }
    std::string client_key_file() const { return (dir_ / "client.key").string(); }
    const std::filesystem::path& dir() const noexcept { return dir_.path(); }
    pid_t pid() const noexcept { return pid_; }

    // kill - SIGKILL and reap. stop - SIGTERM, wait (5 s, then SIGKILL). No-op when not running.
    void kill();
    void stop();
    // restart - stop if running, start again with the same configuration and ports, wait ready.
    void restart();

private:
    void start();
    void wait_ready();
    void make_certificates();

    Options options_;
    TempDir dir_;
    int tcp_port_ = 0;
    int tls_port_ = 0;
    pid_t pid_ = -1;
};

} // namespace relayguard::testing
