// SPDX-License-Identifier: MIT
// resp_codec.cpp - RESP codec: commands encoded here, replies read by hiredis 0.14's reader.
//
// The reader is given our own redisReplyObjectFunctions, which build relayguard::redis::Reply
// values in place (children inside their parent's vector) instead of redisReply trees that
// would have to be converted and freed afterwards: one pass, no second allocation per element,
// and the element/byte limits are checked while the reply is still arriving.
#include "redis/resp_codec.hpp"

#include <algorithm>
#include <cassert>
#include <charconv>
#include <cstring>
#include <new>

#include <hiredis/hiredis.h>
#include <hiredis/read.h>

#include <fmt/format.h>

namespace relayguard::redis::detail {
namespace {

// Elements reserved up front for an array; larger arrays grow as their elements arrive, so a
// server announcing a huge array costs memory only for what it actually sends.
constexpr std::size_t max_array_reserve = 1024;

// Digits of the longest length or count append_command writes (a size_t).
constexpr std::size_t max_length_digits = 20;

// Framing bytes allowed beyond max_bytes in a reply still arriving ("$<len>\r\n" and "\r\n"),
// so that a payload exactly at the limit is accepted whole.
constexpr std::size_t max_framing_bytes = 64;

using Building = ReplyReader::Building;

Building& building_of(const redisReadTask* task) { return *static_cast<Building*>(task->privdata); }

// place - where the object for `task` lives: the root (reset for each new reply), or the next
// element of the parent array. nullptr if hiredis' view and ours disagree (never expected).
Reply* place(const redisReadTask* task)
{
    Building& b = building_of(task);
    if (task->parent == nullptr) {
        b.root = Reply{};
        b.elements = 0;
        b.bytes = 0;
        b.overflow = nullptr;
        return &b.root;
    }
    auto* parent = static_cast<Reply*>(task->parent->obj);
    if (parent == nullptr || parent->type != Reply::Type::array) return nullptr;
    // Elements arrive in order and a sibling is created only after the previous one (and all
    // its children) is complete, so growing the vector never moves an object hiredis still uses.
    if (task->idx < 0 || static_cast<std::size_t>(task->idx) != parent->elements.size()) return nullptr;
    if (task->parent->elements >= 0 && task->idx >= task->parent->elements) return nullptr;
    return &parent->elements.emplace_back();
}

void* create_string(const redisReadTask* task, char* str, std::size_t len)
{
    Reply* r = place(task);
    if (r == nullptr) return nullptr;
    Building& b = building_of(task);
    b.bytes += len;
    if (b.bytes > b.limits.max_bytes) {
        b.overflow = "bytes";
        return nullptr;
    }
    switch (task->type) {
    case REDIS_REPLY_ERROR: r->type = Reply::Type::error; break;
    case REDIS_REPLY_STATUS: r->type = Reply::Type::status; break;
    default: r->type = Reply::Type::string; break;
    }
    r->str.assign(str, len);
    return r;
}

void* create_array(const redisReadTask* task, int elements)
{
    if (elements < 0) return nullptr;
    Reply* r = place(task);
    if (r == nullptr) return nullptr;
    Building& b = building_of(task);
    b.elements += static_cast<std::size_t>(elements);
    if (b.elements > b.limits.max_elements) {
        b.overflow = "elements";
        return nullptr;
    }
    r->type = Reply::Type::array;
    r->elements.reserve(std::min(static_cast<std::size_t>(elements), max_array_reserve));
    return r;
}

void* create_integer(const redisReadTask* task, long long value)
{
    Reply* r = place(task);
    if (r == nullptr) return nullptr;
    r->type = Reply::Type::integer;
    r->integer = value;
    return r;
}

void* create_nil(const redisReadTask* task)
{
    Reply* r = place(task);
    if (r == nullptr) return nullptr;
    r->type = Reply::Type::nil;
    return r;
}

// Nothing to free: every object lives inside Building::root, which the ReplyReader owns, so
// hiredis dropping a half-built reply (on error) leaves nothing behind and frees nothing twice.
void free_object(void*) {}

// hiredis keeps this pointer (not a copy) for the reader's lifetime.
redisReplyObjectFunctions reply_functions = {
    create_string, create_array, create_integer, create_nil, free_object,
};

} // namespace

void append_command(std::string& out, std::span<const std::string_view> args)
{
    assert(!args.empty());
    // Written here rather than by redisFormatCommandArgv: that one sprintf()s every length into
    // a malloc'd command we then copy (13 % of the daemon's instructions on the Redis path).
    // The bytes are the same (redis_client_test compares the two).
    std::size_t size = 1 + max_length_digits + 2;
    for (const auto arg : args) size += 1 + max_length_digits + 2 + arg.size() + 2;
    const std::size_t start = out.size();
    out.resize(start + size);
    char* p = out.data() + start;
    const auto header = [&p](char kind, std::size_t n) {
        *p++ = kind;
        p = std::to_chars(p, p + max_length_digits, n).ptr;
        *p++ = '\r';
        *p++ = '\n';
    };
    header('*', args.size());
    for (const auto arg : args) {
        header('$', arg.size());
        if (!arg.empty()) std::memcpy(p, arg.data(), arg.size());
        p += arg.size();
        *p++ = '\r';
        *p++ = '\n';
    }
    out.resize(static_cast<std::size_t>(p - out.data()));
}

void ReplyReader::ReaderFree::operator()(redisReader* r) const noexcept { redisReaderFree(r); }

ReplyReader::ReplyReader(Limits limits) : reader_(redisReaderCreateWithFunctions(&reply_functions))
{
    if (!reader_) throw std::bad_alloc();
    building_.limits = limits;
    reader_->maxbuf = reader_max_idle_buffer;
    reader_->privdata = &building_;
}

ReplyReader::~ReplyReader() = default;

bool ReplyReader::fail(std::string why)
{
    if (error_.empty()) error_ = std::move(why);
    return false;
}

bool ReplyReader::feed(const char* data, std::size_t size)
{
    if (!error_.empty()) return false;
    if (redisReaderFeed(reader_.get(), data, size) != REDIS_OK) return fail(reader_->errstr);
    return true;
}

ReplyReader::Status ReplyReader::next(Reply& out)
{
    if (!error_.empty()) return Status::error;
    void* obj = nullptr;
    if (redisReaderGetReply(reader_.get(), &obj) != REDIS_OK) {
        // A limit makes our callback return NULL, which hiredis reports as "Out of memory".
        if (building_.overflow != nullptr) {
            fail(fmt::format("reply over the {} limit ({})", building_.overflow,
                             std::string_view(building_.overflow) == "bytes" ? building_.limits.max_bytes
                                                                            : building_.limits.max_elements));
        } else {
            fail(reader_->errstr[0] != '\0' ? reader_->errstr : "unknown reader error");
        }
        return Status::error;
    }
    if (obj == nullptr) {
        // The unparsed rest of the buffer is one reply still arriving (a long bulk string, or the
        // next element of an array); bound it as well, since hiredis waits for it without limit.
        const std::size_t unparsed = reader_->len - reader_->pos;
        if (building_.bytes + unparsed > building_.limits.max_bytes + max_framing_bytes) {
            fail(fmt::format("reply over the bytes limit ({})", building_.limits.max_bytes));
            return Status::error;
        }
        return Status::need_more;
    }
    assert(obj == &building_.root);
    out = std::move(building_.root);
    building_.root = Reply{};
    building_.elements = 0;
    building_.bytes = 0;
    return Status::reply;
}

} // namespace relayguard::redis::detail
