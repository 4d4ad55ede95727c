// SPDX-License-Identifier: MIT
// ctl.hpp - relayguardctl's commands (private to the ctl module and its main()).
//
// Each command is a coroutine on the one io_context of relayguardctl's main thread, talking to
// the daemon's Redis through a redis::Client with the daemon's own key schema (key_schema.hpp)
// and key value normalization (policy/key_values.hpp), and returns an exit status. Output goes
// through Output: human text by default, one line of JSON with --json; errors always to stderr.
// Not thread-safe (one thread). SECURITY: values read from Redis and from requests are
// untrusted; human output escapes control bytes, JSON output escapes per RFC 8259.
#pragma once

#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include <relayguard/config.hpp>
#include <relayguard/limits.hpp>
#include <relayguard/policy.hpp>
#include <relayguard/redis.hpp>

#include "ctl/json.hpp"

namespace relayguard::ctl {

// Exit status (the contract).
inline constexpr int exit_ok = 0;
// Not found (nothing to unset, reset, unsuspend, remove), refused (a limit that does not exist
// or does not fit the key), or failed (config, Redis).
inline constexpr int exit_failure = 1;
// The command line is wrong: unknown command or option, missing or malformed argument.
inline constexpr int exit_usage = 2;

// How long relayguardctl waits for the first connection to Redis before giving up.
inline constexpr std::chrono::milliseconds connect_wait{2000};
// Longest --reason of a suspension: a log and list field, not a document.
inline constexpr std::size_t max_reason_bytes = 500;
// Longest --for of a suspension: a year; longer is "until lifted" (no --for).
inline constexpr std::chrono::seconds max_suspension{366LL * 86400};

// The key value named on the command line (--login ... --global), as typed.
struct KeyArg {
    LimitKey key = LimitKey::sasl_username;
    std::string text; // "" for --global
};

class Output {
public:
    Output(bool json, std::FILE* out, std::FILE* err) : json_(json), out_(out), err_(err) {}

    bool json() const noexcept { return json_; }
    // text - human output on stdout (nothing with --json).
    void text(std::string_view s) const;
    // emit - the JSON document of a command, on one line of stdout (nothing without --json).
    void emit(const Json& value) const;
    // error - "relayguardctl: MESSAGE" on stderr.
    void error(std::string_view message) const;
    // note - human-only remarks on stderr ("note: ..."); nothing with --json.
    void note(std::string_view message) const;

private:
    bool json_;
    std::FILE* out_;
    std::FILE* err_;
};

// What every command works with.
struct Session {
    const Config& config;
    redis::Client* client; // null: store.type is embedded (only `check` runs then)
    const Output& out;
};

// The commands. Arguments are as typed (validated here; a malformed value is exit_usage).
boost::asio::awaitable<int> limits_set(Session& s, const KeyArg& key, std::string_view limit, std::string_view rates);
boost::asio::awaitable<int> limits_get(Session& s, const KeyArg& key, std::string_view limit);
boost::asio::awaitable<int> limits_unset(Session& s, const KeyArg& key, std::string_view limit);
boost::asio::awaitable<int> limits_list(Session& s, const std::optional<KeyArg>& key);
boost::asio::awaitable<int> usage(Session& s, const KeyArg& key, std::string_view limit);
boost::asio::awaitable<int> reset(Session& s, const KeyArg& key, std::string_view limit);

boost::asio::awaitable<int> suspend(Session& s, std::string_view login, std::string_view reason,
                                    std::optional<std::chrono::seconds> duration, std::string_view by);
boost::asio::awaitable<int> unsuspend(Session& s, std::string_view login);
boost::asio::awaitable<int> suspended(Session& s, const std::optional<std::string>& login);

boost::asio::awaitable<int> owners_change(Session& s, bool add, std::string_view key,
                                          const std::vector<std::string>& logins);
boost::asio::awaitable<int> owners_list(Session& s, const std::optional<std::string>& key);
boost::asio::awaitable<int> domains_change(Session& s, bool add, const std::vector<std::string>& domains);
boost::asio::awaitable<int> domains_list(Session& s);

// Largest input `check` reads (a file or standard input): many requests' worth.
inline constexpr std::size_t max_check_input_bytes = 1 << 20;

// read_check_input - the whole of `path` ("-": standard input), at most max_check_input_bytes;
// nullopt and *error when it cannot be read.
std::optional<std::string> read_check_input(const std::string& path, std::string* error);

// check - every request in `input` (the policy protocol's wire format) through decide() and
// the rate limits, against `snapshot` and the store, consuming nothing.
boost::asio::awaitable<int> check(Session& s, const Snapshot& snapshot, std::string_view input);

// validate_key_arg - nullopt if `key` is well-formed, else why (a usage error).
std::optional<std::string> validate_key_arg(const KeyArg& key);

// parse_duration - "90s", "30m", "2h", "1d", "1w", or a bare number of seconds; nullopt if not.
std::optional<std::chrono::seconds> parse_duration(std::string_view text) noexcept;

// capture_logs - route spdlog (the redis::Client logs there) into memory instead of stderr,
// so that connection trouble is reported once, by connect_error().
void capture_logs();
// connect_error - why Redis could not be reached, from the client's last warning ("" if none).
std::string connect_error();

// operator_name - "operator NAME" of a suspension: `by` if given, else the invoking user
// ($SUDO_USER, else the user of the real uid).
std::string operator_name(std::string_view by);

} // namespace relayguard::ctl
