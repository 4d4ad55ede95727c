// SPDX-License-Identifier: MIT
// redis_server.cpp - start, probe and stop a redis-server child process (see redis_server.hpp).
#include "testing/redis_server.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

namespace relayguard::testing {
namespace {

using namespace std::chrono_literals;

// How long redis-server may take to answer PING after exec, and to exit after SIGTERM.
constexpr auto ready_timeout = 5s;
constexpr auto stop_timeout = 5s;

// Pause between readiness probes and exit checks.
constexpr auto poll_interval = 5ms;

// Most bytes of redis.log quoted when the server fails to come up.
constexpr std::size_t max_quoted_log = 2000;

std::filesystem::path find_redis_server()
{
    if (const char* path = std::getenv("PATH")) {
        std::string_view rest = path;
        while (!rest.empty()) {
            const auto colon = rest.find(':');
            const auto dir = rest.substr(0, colon);
            auto candidate = std::filesystem::path(dir) / "redis-server";
            if (!dir.empty() && ::access(candidate.c_str(), X_OK) == 0) return candidate;
            if (colon == std::string_view::npos) break;
            rest.remove_prefix(colon + 1);
        }
    }
    if (::access("/usr/bin/redis-server", X_OK) == 0) return "/usr/bin/redis-server";
    throw std::runtime_error("redis-server not found (PATH or /usr/bin); install redis-server: "
                             "the integration tests need a real one");
}

// free_loopback_port - a port the kernel just gave us on 127.0.0.1, released again for Redis.
int free_loopback_port()
{
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error("socket: " + std::string(std::strerror(errno)));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0
        || ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
        ::close(fd);
        throw std::runtime_error("bind/getsockname: " + std::string(std::strerror(errno)));
    }
    ::close(fd);
    return ntohs(addr.sin_port);
}

// run_command - run argv[0] (looked up in PATH), output into `log`; throws unless it exits 0.
void run_command(const std::vector<std::string>& args, const std::filesystem::path& log)
{
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork: " + std::string(std::strerror(errno)));
    if (pid == 0) {
        const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            ::dup2(fd, 1);
            ::dup2(fd, 2);
        }
        ::execvp(argv[0], argv.data());
        ::_exit(127);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        std::string cmd;
        for (const auto& a : args) cmd += a + " ";
        throw std::runtime_error("command failed: " + cmd + "\n" + read_file(log));
    }
}

// ping - one PING over the UNIX socket with plain POSIX I/O; true on any reply ("+PONG", or
// "-NOAUTH" when a password is set: either way the server is accepting commands).
bool ping(const std::string& path)
{
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    bool ok = false;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0
        && ::write(fd, "PING\r\n", 6) == 6) {
        pollfd p{fd, POLLIN, 0};
        char c = 0;
        ok = ::poll(&p, 1, 1000) == 1 && ::read(fd, &c, 1) == 1 && (c == '+' || c == '-');
    }
    ::close(fd);
    return ok;
}

} // namespace

RedisServer::RedisServer(Options options) : options_(std::move(options))
{
    if (options_.tcp) tcp_port_ = free_loopback_port();
    if (options_.tls) {
        tls_port_ = free_loopback_port();
        make_certificates();
    }
    std::string conf;
    conf += "daemonize no\n";
    conf += "port " + std::to_string(tcp_port_) + "\n";
    conf += "bind 127.0.0.1\n";
    conf += "unixsocket " + unix_path() + "\n";
    conf += "unixsocketperm 700\n";
    conf += "save \"\"\n";
    conf += "appendonly no\n";
    conf += "dir " + dir().string() + "\n";
    conf += "logfile " + (dir() / "redis.log").string() + "\n";
    conf += "enable-debug-command local\n"; // DEBUG SLEEP in the timeout tests
    if (!options_.requirepass.empty()) conf += "requirepass " + options_.requirepass + "\n";
    if (!options_.acl_user.empty())
        conf += "user " + options_.acl_user + " on >" + options_.acl_password + " ~* &* +@all\n";
    if (options_.tls) {
        conf += "tls-port " + std::to_string(tls_port_) + "\n";
        conf += "tls-cert-file " + (dir() / "server.crt").string() + "\n";
        conf += "tls-key-file " + (dir() / "server.key").string() + "\n";
        conf += "tls-ca-cert-file " + ca_file() + "\n";
        conf += std::string("tls-auth-clients ") + (options_.tls_client_certs ? "yes" : "no") + "\n";
    }
    write_file(dir() / "redis.conf", conf);
    start();
}

RedisServer::~RedisServer()
{
    try {
        stop();
    } catch (...) { // a destructor must not throw; the child is gone or killed by now
    }
}

void RedisServer::make_certificates()
{
    const auto log = dir() / "openssl.log";
    const auto p = [this](const char* name) { return (dir() / name).string(); };
    // EC keys: much faster to generate than RSA, and what a modern deployment would use.
    const std::vector<std::string> newkey = {"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"};
    auto req = [&](std::vector<std::string> head, std::vector<std::string> tail) {
        head.insert(head.end(), newkey.begin(), newkey.end());
        head.insert(head.end(), tail.begin(), tail.end());
        run_command(head, log);
    };
    req({"openssl", "req", "-x509", "-new"},
        {"-keyout", p("ca.key"), "-out", p("ca.crt"), "-days", "2", "-subj", "/CN=relayguard-test-ca"});
    write_file(dir() / "server.ext",
               "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n");
    req({"openssl", "req", "-new"}, {"-keyout", p("server.key"), "-out", p("server.csr"), "-subj", "/CN=localhost"});
    run_command({"openssl", "x509", "-req", "-in", p("server.csr"), "-CA", p("ca.crt"), "-CAkey", p("ca.key"),
                 "-CAcreateserial", "-out", p("server.crt"), "-days", "2", "-extfile", p("server.ext")},
                log);
    if (options_.tls_client_certs) {
        write_file(dir() / "client.ext", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n");
        req({"openssl", "req", "-new"},
            {"-keyout", p("client.key"), "-out", p("client.csr"), "-subj", "/CN=relayguard-test-client"});
        run_command({"openssl", "x509", "-req", "-in", p("client.csr"), "-CA", p("ca.crt"), "-CAkey", p("ca.key"),
                     "-CAcreateserial", "-out", p("client.crt"), "-days", "2", "-extfile", p("client.ext")},
                    log);
    }
}

void RedisServer::start()
{
    const std::string exe = find_redis_server().string();
    const std::string conf = (dir() / "redis.conf").string();
    const std::string out = (dir() / "redis.stdout").string();
    char* argv[] = {const_cast<char*>(exe.c_str()), const_cast<char*>(conf.c_str()), nullptr};
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork: " + std::string(std::strerror(errno)));
    if (pid == 0) {
        // Die with the test process, even if it crashes before stopping us.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) ::_exit(1);
        const int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            ::dup2(fd, 1);
            ::dup2(fd, 2);
        }
        ::execv(argv[0], argv);
        ::_exit(127);
    }
    pid_ = pid;
    wait_ready();
}

void RedisServer::wait_ready()
{
    const auto deadline = std::chrono::steady_clock::now() + ready_timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = -1;
            std::string log = read_file(dir() / "redis.stdout");
            std::error_code ec;
            if (std::filesystem::exists(dir() / "redis.log", ec)) log += read_file(dir() / "redis.log");
            throw std::runtime_error("redis-server exited at start (status " + std::to_string(status)
                                     + "):\n" + log.substr(0, max_quoted_log));
        }
        if (ping(unix_path())) return;
        std::this_thread::sleep_for(poll_interval);
    }
    kill();
    throw std::runtime_error("redis-server did not answer PING on " + unix_path() + " within 5 s");
}

void RedisServer::kill()
{
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {}
    pid_ = -1;
}

void RedisServer::stop()
{
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    const auto deadline = std::chrono::steady_clock::now() + stop_timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = -1;
            return;
        }
        std::this_thread::sleep_for(poll_interval);
    }
    kill();
}

void RedisServer::restart()
{
    stop();
    start();
}

} // namespace relayguard::testing
