// SPDX-License-Identifier: MIT
// listener.hpp - open the listening sockets of server.listen with plain POSIX calls (private).
//
// bind() runs before the daemon forks and before any thread exists, so this keeps to file
// descriptors: the io_contexts adopt them in start(). Startup edge: errors throw
// std::runtime_error naming the endpoint. Not thread-safe (called from the main thread).
// SECURITY: never deletes a path that is not a socket, nor a socket another process accepts on.
#pragma once

#include <string>
#include <sys/types.h>
#include <vector>

#include <relayguard/config.hpp>

namespace relayguard::server_detail {

// An owned file descriptor, closed on destruction.
class UniqueFd {
public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) noexcept : fd_(fd) {}
    UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
    UniqueFd& operator=(UniqueFd&& other) noexcept;
    ~UniqueFd();
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;

    int get() const noexcept { return fd_; }
    int release() noexcept
    {
        const int fd = fd_;
        fd_ = -1;
        return fd;
    }

private:
    int fd_ = -1;
};

// A socket file we created, remembered by inode so that we never remove one that a newer
// daemon has put at the same path in the meantime.
struct SocketFile {
    std::string path;
    dev_t dev = 0;
    ino_t ino = 0;
};

// One bound, listening socket.
struct BoundSocket {
    UniqueFd fd;
    int family = 0;   // AF_INET, AF_INET6 or AF_UNIX
    std::string name; // "inet:127.0.0.1:10033", "inet:[::1]:10033", "unix:/path"
};

struct BoundListeners {
    std::vector<BoundSocket> sockets;
    std::vector<SocketFile> files; // UNIX socket files created, to remove at stop
};

// open_listeners - bind and listen on every endpoint of config.listen (see server.hpp bind()).
// On error, what was already opened is closed and its socket files removed, then it throws.
BoundListeners open_listeners(const ServerConfig& config);

// remove_socket_file - unlink the file if it is still the socket we created. Never throws.
void remove_socket_file(const SocketFile& file) noexcept;

} // namespace relayguard::server_detail
