// SPDX-License-Identifier: MIT
// listener.cpp - bind, chmod/chown and listen for server.listen (see listener.hpp).
#include "server/listener.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <grp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace relayguard::server_detail {
namespace {

// Pending connections the kernel queues per listener while we are busy or at max_connections;
// the kernel caps it at net.core.somaxconn anyway.
constexpr int listen_backlog = SOMAXCONN;
// Buffer for getpwnam_r/getgrnam_r; large enough for any sane passwd/group entry.
constexpr std::size_t name_lookup_buffer_bytes = 16384;

[[noreturn]] void fail(const std::string& label, std::string_view what, int err)
{
    throw std::runtime_error(fmt::format("{}: {}: {}", label, what, std::strerror(err)));
}

[[noreturn]] void fail(const std::string& label, std::string_view what)
{
    throw std::runtime_error(fmt::format("{}: {}", label, what));
}

// endpoint_label - how an endpoint is named in errors: as written in the config if known.
std::string endpoint_label(const Endpoint& ep)
{
    if (!ep.text.empty()) return ep.text;
    if (ep.kind == Endpoint::Kind::unix_socket) return "unix:" + ep.path;
    if (ep.host.find(':') != std::string::npos) return fmt::format("inet:[{}]:{}", ep.host, ep.port);
    return fmt::format("inet:{}:{}", ep.host, ep.port);
}

// inet_name - "inet:ADDR:PORT" for a bound address, brackets around IPv6.
std::string inet_name(const sockaddr_storage& ss)
{
    char text[INET6_ADDRSTRLEN] = {};
    if (ss.ss_family == AF_INET) {
        const auto& sin = reinterpret_cast<const sockaddr_in&>(ss);
        ::inet_ntop(AF_INET, &sin.sin_addr, text, sizeof text);
        return fmt::format("inet:{}:{}", text, ntohs(sin.sin_port));
    }
    const auto& sin6 = reinterpret_cast<const sockaddr_in6&>(ss);
    ::inet_ntop(AF_INET6, &sin6.sin6_addr, text, sizeof text);
    return fmt::format("inet:[{}]:{}", text, ntohs(sin6.sin6_port));
}

// bind_inet_address - one TCP listener on one address. dual_stack: an IPv6 socket that also
// takes IPv4 clients (for "*"); otherwise IPv6 sockets are v6-only, so that "[::]" and
// "0.0.0.0" can both be listed without a conflict.
BoundSocket bind_inet_address(const std::string& label, const sockaddr* addr, socklen_t len, bool dual_stack)
{
    const int family = addr->sa_family;
    UniqueFd fd(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) fail(label, "socket", errno);
    const int one = 1;
    // A restarted daemon must be able to bind while old connections sit in TIME_WAIT.
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) fail(label, "SO_REUSEADDR", errno);
    if (family == AF_INET6) {
        const int v6only = dual_stack ? 0 : 1;
        if (::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only) != 0)
            fail(label, "IPV6_V6ONLY", errno);
    }
    if (::bind(fd.get(), addr, len) != 0) fail(label, "bind", errno);
    if (::listen(fd.get(), listen_backlog) != 0) fail(label, "listen", errno);

    sockaddr_storage bound{};
    socklen_t bound_len = sizeof bound;
    if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &bound_len) != 0)
        fail(label, "getsockname", errno);
    return BoundSocket{std::move(fd), family, inet_name(bound)};
}

// bind_inet - every address of an inet endpoint: "*" is all addresses (IPv6 dual-stack, or
// IPv4 only on a host without IPv6); a host name may give several addresses.
void bind_inet(const Endpoint& ep, BoundListeners& out)
{
    const std::string label = endpoint_label(ep);
    if (ep.host == "*" || ep.host.empty()) {
        sockaddr_in6 any6{};
        any6.sin6_family = AF_INET6;
        any6.sin6_addr = in6addr_any;
        any6.sin6_port = htons(ep.port);
        const int probe = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0) {
            ::close(probe);
            out.sockets.push_back(
                bind_inet_address(label, reinterpret_cast<sockaddr*>(&any6), sizeof any6, true));
            return;
        }
        if (errno != EAFNOSUPPORT) fail(label, "socket", errno);
        sockaddr_in any4{};
        any4.sin_family = AF_INET;
        any4.sin_addr.s_addr = htonl(INADDR_ANY);
        any4.sin_port = htons(ep.port);
        out.sockets.push_back(bind_inet_address(label, reinterpret_cast<sockaddr*>(&any4), sizeof any4, false));
        return;
    }

    std::string host = ep.host;
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    // No AI_ADDRCONFIG: it would hide ::1 on a host whose only IPv6 address is loopback.
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    const std::string port = std::to_string(ep.port);
    addrinfo* result = nullptr;
    if (const int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &result); rc != 0)
        fail(label, fmt::format("cannot resolve {}: {}", host, ::gai_strerror(rc)));
    std::vector<sockaddr_storage> seen;
    try {
        for (const addrinfo* ai = result; ai; ai = ai->ai_next) {
            if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
            sockaddr_storage ss{};
            std::memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
            bool duplicate = false;
            for (const auto& s : seen) duplicate = duplicate || std::memcmp(&s, &ss, sizeof ss) == 0;
            if (duplicate) continue;
            seen.push_back(ss);
            out.sockets.push_back(bind_inet_address(label, ai->ai_addr, ai->ai_addrlen, false));
        }
    } catch (...) {
        ::freeaddrinfo(result);
        throw;
    }
    ::freeaddrinfo(result);
    if (seen.empty()) fail(label, fmt::format("{} has no IPv4 or IPv6 address", host));
}

// lookup_uid / lookup_gid - an unknown name is a startup error, not a silent root-owned socket.
uid_t lookup_uid(const std::string& label, const std::string& name)
{
    std::vector<char> buf(name_lookup_buffer_bytes);
    passwd pw{};
    passwd* found = nullptr;
    const int rc = ::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found);
    if (rc != 0) fail(label, fmt::format("cannot look up socket_owner \"{}\"", name), rc);
    if (!found) fail(label, fmt::format("unknown socket_owner \"{}\"", name));
    return pw.pw_uid;
}

gid_t lookup_gid(const std::string& label, const std::string& name)
{
    std::vector<char> buf(name_lookup_buffer_bytes);
    group gr{};
    group* found = nullptr;
    const int rc = ::getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &found);
    if (rc != 0) fail(label, fmt::format("cannot look up socket_group \"{}\"", name), rc);
    if (!found) fail(label, fmt::format("unknown socket_group \"{}\"", name));
    return gr.gr_gid;
}

// clear_stale_socket - make room for our socket at `path`. A socket file nobody accepts on is
// left over from a daemon that died: remove it. One that accepts belongs to a live process,
// and anything that is not a socket is not ours to delete.
void clear_stale_socket(const std::string& label, const std::string& path, const sockaddr_un& addr)
{
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) return;
        fail(label, "cannot stat " + path, errno);
    }
    if (!S_ISSOCK(st.st_mode)) fail(label, fmt::format("{} exists and is not a socket; not removing it", path));

    // Non-blocking: a live daemon with a full backlog would otherwise block us here.
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (probe.get() < 0) fail(label, "socket", errno);
    if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0 || errno == EAGAIN ||
        errno == EINPROGRESS)
        throw std::runtime_error("unix:" + path + " is in use by another process");
    if (errno == ENOENT) return; // removed meanwhile
    if (errno != ECONNREFUSED) fail(label, "cannot check existing socket " + path, errno);
    spdlog::info("{}: removing stale socket file {}", label, path);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) fail(label, "cannot remove stale socket " + path, errno);
}

// bind_unix - a UNIX listener: stale file check, bind, mode and owner, then listen.
void bind_unix(const Endpoint& ep, const ServerConfig& config, BoundListeners& out)
{
    const std::string label = endpoint_label(ep);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (ep.path.empty() || ep.path.size() >= sizeof addr.sun_path)
        fail(label, fmt::format("socket path must be 1 to {} bytes long", sizeof addr.sun_path - 1));
    std::memcpy(addr.sun_path, ep.path.data(), ep.path.size());

    // Resolve names before creating anything, so that a typo leaves no file behind.
    const uid_t uid = config.socket_owner.empty() ? static_cast<uid_t>(-1) : lookup_uid(label, config.socket_owner);
    const gid_t gid = config.socket_group.empty() ? static_cast<gid_t>(-1) : lookup_gid(label, config.socket_group);

    clear_stale_socket(label, ep.path, addr);
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) fail(label, "socket", errno);
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) fail(label, "bind", errno);

    struct stat st {};
    if (::stat(ep.path.c_str(), &st) != 0) {
        const int err = errno;
        ::unlink(ep.path.c_str());
        fail(label, "stat after bind", err);
    }
    out.files.push_back(SocketFile{ep.path, st.st_dev, st.st_ino});

    // Permissions are set before listen(), so that no client connects through a wider mode
    // than configured (bind() applies the umask, not socket_mode).
    if (::chmod(ep.path.c_str(), config.socket_mode) != 0) fail(label, "chmod " + ep.path, errno);
    if ((uid != static_cast<uid_t>(-1) || gid != static_cast<gid_t>(-1)) && ::chown(ep.path.c_str(), uid, gid) != 0)
        fail(label, "chown " + ep.path, errno);
    if (::listen(fd.get(), listen_backlog) != 0) fail(label, "listen", errno);
    out.sockets.push_back(BoundSocket{std::move(fd), AF_UNIX, "unix:" + ep.path});
}

} // namespace

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept
{
    if (this != &other) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = other.release();
    }
    return *this;
}

UniqueFd::~UniqueFd()
{
    if (fd_ >= 0) ::close(fd_);
}

BoundListeners open_listeners(const ServerConfig& config)
{
    BoundListeners out;
    try {
        if (config.listen.empty()) throw std::runtime_error("server.listen: no endpoint to listen on");
        for (const auto& ep : config.listen) {
            if (ep.kind == Endpoint::Kind::unix_socket)
                bind_unix(ep, config, out);
            else
                bind_inet(ep, out);
        }
    } catch (...) {
        out.sockets.clear();
        for (const auto& f : out.files) remove_socket_file(f);
        throw;
    }
    return out;
}

void remove_socket_file(const SocketFile& file) noexcept
{
    struct stat st {};
    if (::lstat(file.path.c_str(), &st) != 0) return;
    if (!S_ISSOCK(st.st_mode) || st.st_dev != file.dev || st.st_ino != file.ino) return;
    if (::unlink(file.path.c_str()) != 0 && errno != ENOENT)
        spdlog::warn("cannot remove socket file {}: {}", file.path, std::strerror(errno));
}

} // namespace relayguard::server_detail
