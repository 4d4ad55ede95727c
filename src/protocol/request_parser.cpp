// SPDX-License-Identifier: MIT
// request_parser.cpp - incremental, bounded policy request parser (see request_parser.hpp).
//
// Owns one connection's receive buffer. Each byte is searched once for "\n" and once for NUL;
// limits are enforced before a line or request completes, so a peer that never sends "\n" costs
// at most max_request_bytes plus one read. Errors are sticky. Not thread-safe.
// SECURITY: input untrusted; values never contain NUL or newline (SMTPD_POLICY_README).
#include <relayguard/request_parser.hpp>

#include <algorithm>
#include <cassert>
#include <cstring>
#include <limits>

namespace relayguard {
namespace {

// The only request type of the protocol (SMTPD_POLICY_README).
constexpr std::string_view access_policy_request = "smtpd_access_policy";

// Keep at most this much buffer on a connection that has nothing buffered: an odd large
// request must not pin its buffer for the life of a long-lived Postfix connection.
constexpr std::size_t idle_buffer_keep_bytes = 16384;

// "No error found yet" as a stream position: later than any real one.
constexpr std::size_t no_error = std::numeric_limits<std::size_t>::max();

static_assert(attr_count <= 32, "seen_ has one bit per attribute");

// add - a + b, saturating, so that limits of SIZE_MAX mean "no limit" instead of overflowing.
constexpr std::size_t add(std::size_t a, std::size_t b) noexcept
{
    return b > std::numeric_limits<std::size_t>::max() - a ? std::numeric_limits<std::size_t>::max()
                                                            : a + b;
}

constexpr std::uint32_t bit(Attr attr) noexcept
{
    return std::uint32_t{1} << static_cast<unsigned>(attr);
}

class ParseErrorCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "relayguard.request"; }

    std::string message(int ev) const override
    {
        switch (static_cast<ParseError>(ev)) {
        case ParseError::line_too_long: return "line too long";
        case ParseError::request_too_large: return "request too large";
        case ParseError::too_many_attributes: return "too many attributes";
        case ParseError::missing_equals: return "line without '='";
        case ParseError::empty_name: return "empty attribute name";
        case ParseError::nul_byte: return "NUL byte in input";
        case ParseError::missing_request_type: return "request without request type";
        case ParseError::unknown_request_type: return "unknown request type";
        }
        return "unknown request parse error";
    }
};

} // namespace

const std::error_category& parse_error_category() noexcept
{
    static const ParseErrorCategory category;
    return category;
}

std::error_code make_error_code(ParseError e) noexcept
{
    return {static_cast<int>(e), parse_error_category()};
}

RequestParser::RequestParser(ParserLimits limits) : limits_(limits), nul_(no_error) {}

// prepare - make room for n more bytes after end_.
std::span<char> RequestParser::prepare(std::size_t n)
{
    // After an error the buffer is frozen so that sample() keeps pointing at the bad line.
    if (!error_) {
        const std::size_t unconsumed = end_ - pos_;
        if (unconsumed == 0) {
            // Free to start over at the front; this is the common case (Postfix sends one
            // request and waits for the reply), so there is normally nothing to move.
            pos_ = end_ = 0;
            if (buf_.size() > idle_buffer_keep_bytes && buf_.size() > n) std::string().swap(buf_);
        } else if (buf_.size() - end_ < n && pos_ >= unconsumed) {
            // Reclaim the consumed prefix instead of growing, but only once it is at least as
            // large as what must be moved: each memmove is then paid for by bytes already
            // parsed, so a pipelining peer costs at most one extra copy per byte, and the buffer
            // stays under twice the unconsumed bytes plus one read.
            std::memmove(buf_.data(), buf_.data() + pos_, unconsumed);
            pos_ = 0;
            end_ = unconsumed;
        }
    }
    if (buf_.size() - end_ < n) buf_.resize(end_ + n);
    return {buf_.data() + end_, buf_.size() - end_};
}

void RequestParser::commit(std::size_t k)
{
    assert(k <= buf_.size() - end_);
    if (error_) return; // input after an error is dropped, as the connection is going away
    end_ += std::min(k, buf_.size() - end_);
}

void RequestParser::feed(std::string_view bytes)
{
    if (error_ || bytes.empty()) return;
    const auto space = prepare(bytes.size());
    std::memcpy(space.data(), bytes.data(), bytes.size());
    commit(bytes.size());
}

// next - scan buffered lines until a request is complete, more input is needed, or an error.
RequestParser::Status RequestParser::next(Request& out)
{
    if (error_) return Status::error;
    // SMTPD_POLICY_README: attribute values never contain NUL. Every newly received byte is
    // searched once here, rather than line by line below; a NUL found is an error once the
    // scan reaches it (so that an earlier error on the way is still reported first).
    if (nul_ == no_error && pos_ + checked_ < end_) {
        if (const void* nul = std::memchr(buf_.data() + pos_ + checked_, '\0', end_ - pos_ - checked_))
            nul_ = static_cast<std::size_t>(static_cast<const char*>(nul) - buf_.data()) - pos_;
        checked_ = end_ - pos_;
    }
    // When everything buffered is shorter than both length limits, no line of it can break
    // them: the usual case (a whole request in one read) skips their arithmetic.
    const bool within_limits =
        end_ - pos_ <= limits_.max_line_bytes && end_ - pos_ <= limits_.max_request_bytes;
    for (;;) {
        const char* const data = buf_.data();
        const std::size_t line = pos_ + line_;
        const std::size_t from = pos_ + scan_;

        // Look for "\n" no further than where a limit is certainly broken, so a huge read
        // without a newline costs one line's worth of scanning, not the whole read.
        const std::size_t horizon =
            within_limits ? end_
                          : std::max(from, std::min({end_, add(line, add(limits_.max_line_bytes, 2)),
                                                     add(pos_, add(limits_.max_request_bytes, 1))}));
        const auto* nl = static_cast<const char*>(std::memchr(data + from, '\n', horizon - from));
        const std::size_t stop = nl ? static_cast<std::size_t>(nl - data) : horizon;

        // Errors in the newly scanned bytes [from, stop), reported by the stream position that
        // reveals them, earliest first: the error and sample then never depend on how the input
        // was split into reads.
        std::size_t err_at = no_error;
        ParseError err{};
        if (nul_ != no_error && pos_ + nul_ < stop) {
            err_at = pos_ + nul_;
            err = ParseError::nul_byte;
        }
        if (!within_limits) {
            // Byte `over` of the line exceeds max_line_bytes, unless it is the "\r" of a "\r\n".
            const std::size_t over = add(line, limits_.max_line_bytes);
            if (over < stop) {
                const std::size_t at = data[over] == '\r' ? over + 1 : over;
                if (at < stop && at < err_at) {
                    err_at = at;
                    err = ParseError::line_too_long;
                }
            }
            // Byte `too_far` (the newline included) is one past max_request_bytes of this request.
            const std::size_t too_far = add(pos_, limits_.max_request_bytes);
            if ((too_far < stop || (too_far == stop && nl)) && too_far < err_at) {
                err_at = too_far;
                err = ParseError::request_too_large;
            }
        }
        if (err_at != no_error) return fail(err, line, err_at + 1);

        if (!nl) {
            scan_ = stop - pos_;
            return Status::need_more;
        }

        // A complete line [line, stop). SMTPD_POLICY_README lines end in "\n"; a "\r" before
        // it comes from hand-typed (telnet) input and is dropped.
        scan_ = line_ = stop + 1 - pos_;
        std::size_t content_end = stop;
        if (content_end > line && data[content_end - 1] == '\r') --content_end;
        if (content_end == line) return finish_request(out, stop + 1);

        if (data[line] == '=') return fail(ParseError::empty_name, line, stop + 1);
        const auto* eq = static_cast<const char*>(std::memchr(data + line, '=', content_end - line));
        if (!eq) return fail(ParseError::missing_equals, line, stop + 1);
        // Unknown attributes count too: the limit bounds work per request, not memory.
        if (++lines_ > limits_.max_attributes) return fail(ParseError::too_many_attributes, line, stop + 1);

        // SMTPD_POLICY_README: split at the first "="; ignore attributes you don't know; a
        // repeated attribute keeps its last value.
        const std::size_t value = static_cast<std::size_t>(eq - data) + 1;
        if (const auto attr = attr_from_name({data + line, value - 1 - line})) {
            values_[static_cast<std::size_t>(*attr)] = {value - pos_, content_end - value};
            seen_ |= bit(*attr);
        }
    }
}

// finish_request - the empty line at next_pos - 1 ended the request: check its type, copy it
// out, and start the next one.
RequestParser::Status RequestParser::finish_request(Request& out, std::size_t next_pos)
{
    const char* const data = buf_.data();
    const Span type = values_[static_cast<std::size_t>(Attr::request)];
    if (!(seen_ & bit(Attr::request))) return fail(ParseError::missing_request_type, pos_, next_pos);
    if (std::string_view(data + pos_ + type.offset, type.size) != access_policy_request) {
        const std::size_t type_line = pos_ + type.offset - attr_name(Attr::request).size() - 1;
        return fail(ParseError::unknown_request_type, type_line, next_pos);
    }

    out.clear();
    for (std::size_t i = 0; i < attr_count; ++i) {
        const auto attr = static_cast<Attr>(i);
        if (seen_ & bit(attr)) out.set(attr, {data + pos_ + values_[i].offset, values_[i].size});
    }

    // Offsets from pos_ move with it; a NUL found lies beyond this request.
    const std::size_t consumed = next_pos - pos_;
    checked_ = checked_ > consumed ? checked_ - consumed : 0;
    if (nul_ != no_error) nul_ -= consumed;
    pos_ = next_pos;
    scan_ = line_ = lines_ = 0;
    seen_ = 0;
    if (pos_ == end_) pos_ = end_ = 0;
    return Status::request;
}

// fail - record a sticky error found in the line starting at `line`, revealed by byte seen - 1.
RequestParser::Status RequestParser::fail(ParseError e, std::size_t line, std::size_t seen)
{
    error_ = make_error_code(e);
    error_at_ = line;
    error_end_ = seen;
    return Status::error;
}

std::string_view RequestParser::sample(std::size_t max) const noexcept
{
    // An error's sample stops at the byte that revealed it, so it does not depend on how much
    // input happened to arrive after it.
    if (error_) return {buf_.data() + error_at_, std::min(max, error_end_ - error_at_)};
    return {buf_.data() + pos_, std::min(max, end_ - pos_)};
}

bool RequestParser::idle() const noexcept { return !error_ && pos_ == end_; }

void RequestParser::release() noexcept
{
    if (!idle()) return;
    pos_ = end_ = scan_ = line_ = checked_ = 0;
    nul_ = no_error;
    std::string().swap(buf_);
}

} // namespace relayguard
