// SPDX-License-Identifier: MIT
// resp_codec.hpp - RESP encoding (our own) and decoding (hiredis 0.14's redisReader).
//
// No I/O: the client feeds bytes in and takes Reply values out. Not thread-safe (one per
// connection). SECURITY: replies are untrusted and bounded: elements per reply, bytes per reply
// (both counted over the whole reply tree) and nesting depth (hiredis: 7); past them the reader
// stops in a sticky error, after which the connection must be closed.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include <relayguard/redis.hpp>

struct redisReader;

namespace relayguard::redis::detail {

// Most bytes one reply may hold (string payloads plus the unparsed rest); ours are a few hundred
// bytes, an operator's listing a few MB. Redis' own proto-max-bulk-len (512 MB) is far too much.
inline constexpr std::size_t max_reply_bytes = std::size_t{16} << 20;

// Idle read buffer hiredis may keep allocated between replies (reader->maxbuf; its default).
inline constexpr std::size_t reader_max_idle_buffer = 16 * 1024;

// append_command - RESP-encode `args` (binary-safe) onto `out`. args must not be empty.
void append_command(std::string& out, std::span<const std::string_view> args);

// ReplyReader - incremental RESP decoder. feed() then next() until it says need_more.
class ReplyReader {
public:
    struct Limits {
        std::size_t max_elements = max_reply_elements; // array elements, summed over the tree
        std::size_t max_bytes = max_reply_bytes;       // string bytes, summed over the tree
    };
    enum class Status { reply, need_more, error };

    ReplyReader() : ReplyReader(Limits{}) {}
    explicit ReplyReader(Limits limits);
    ~ReplyReader();
    // hiredis keeps a pointer to this object (privdata): it must not move.
    ReplyReader(const ReplyReader&) = delete;
    ReplyReader& operator=(const ReplyReader&) = delete;

    // feed - append received bytes; false once the reader is in error (see error()).
    bool feed(const char* data, std::size_t size);

    // next - the oldest complete reply into `out`, need_more, or error (sticky).
    Status next(Reply& out);

    // error - why the reader stopped; empty while it has not.
    const std::string& error() const noexcept { return error_; }

    // State shared with hiredis' object callbacks (resp_codec.cpp); public only for them.
    struct Building {
        Reply root;                 // the reply being built; children live inside it
        std::size_t elements = 0;   // array elements created so far in this reply
        std::size_t bytes = 0;      // string bytes created so far in this reply
        const char* overflow = nullptr; // which limit was hit, for error()
        Limits limits;
    };

private:
    struct ReaderFree {
        void operator()(redisReader* r) const noexcept;
    };

    bool fail(std::string why);

    Building building_;
    std::unique_ptr<redisReader, ReaderFree> reader_;
    std::string error_;
};

} // namespace relayguard::redis::detail
