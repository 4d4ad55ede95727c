// SPDX-License-Identifier: MIT
// relayguardctl_test.cpp - the relayguardctl executable against a real redis-server and, where
// the issue asks for "the daemon's very next answer", the real relayguard daemon.
//
// Each test runs binary_dir()/relayguardctl with fork/exec (stdout, stderr and stdin in files of
// a TempDir), checks the exit status (0/1/2), parses --json output with the small reader below,
// and looks at Redis itself through a redis::Client to hold the key schema to key_schema.hpp.
// Waits have deadlines and use pidfd; only the processes a test started are signalled, by pid.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <fmt/core.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <relayguard/config.hpp>
#include <relayguard/key_schema.hpp>
#include <relayguard/redis.hpp>

#include "testing/daemon_process.hpp"
#include "testing/redis_server.hpp"
#include "testing/test_support.hpp"

extern char** environ;

namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using relayguard::LimitKey;
using relayguard::redis::Reply;
using relayguard::testing::DaemonProcess;
using relayguard::testing::PolicyClient;
using relayguard::testing::RedisServer;
using relayguard::testing::TempDir;
using relayguard::testing::binary_dir;
using relayguard::testing::write_file;
using Clock = std::chrono::steady_clock;

// How long one step may take before the test fails instead of hanging (a loaded 2-core box).
constexpr std::chrono::milliseconds step_limit{10000};

// ---- a small JSON reader (enough for relayguardctl's output) ----

struct JValue {
    enum class Type { null, boolean, number, string, array, object };
    Type type = Type::null;
    bool b = false;
    double n = 0;
    std::string s;
    std::vector<JValue> a;
    // An object's members as two parallel vectors: a pair<string, JValue> needs JValue complete
    // here, which g++ lets pass and clang does not.
    std::vector<std::string> keys;
    std::vector<JValue> values;

    const JValue& operator[](std::string_view key) const
    {
        static const JValue missing;
        for (std::size_t i = 0; i < keys.size(); ++i)
            if (keys[i] == key) return values[i];
        return missing;
    }
    const JValue& operator[](std::size_t i) const
    {
        static const JValue missing;
        return i < a.size() ? a[i] : missing;
    }
    bool has(std::string_view key) const
    {
        return std::find(keys.begin(), keys.end(), key) != keys.end();
    }
    bool is_null() const { return type == Type::null; }
    long long num() const { return static_cast<long long>(n); }
};

class JsonReader {
public:
    explicit JsonReader(std::string_view text) : t_(text) {}

    JValue document()
    {
        JValue v = value();
        skip();
        if (i_ != t_.size()) throw std::runtime_error("trailing bytes after JSON value");
        return v;
    }

private:
    void skip()
    {
        while (i_ < t_.size() && (t_[i_] == ' ' || t_[i_] == '\n' || t_[i_] == '\t' || t_[i_] == '\r')) ++i_;
    }
    char peek()
    {
        skip();
        if (i_ >= t_.size()) throw std::runtime_error("unexpected end of JSON");
        return t_[i_];
    }
    void expect(std::string_view word)
    {
        if (t_.substr(i_, word.size()) != word) throw std::runtime_error("bad JSON literal");
        i_ += word.size();
    }
    JValue value()
    {
        JValue v;
        const char c = peek();
        if (c == '{') {
            v.type = JValue::Type::object;
            ++i_;
            if (peek() == '}') {
                ++i_;
                return v;
            }
            for (;;) {
                if (peek() != '"') throw std::runtime_error("object key is not a string");
                std::string key = string();
                if (peek() != ':') throw std::runtime_error("missing ':'");
                ++i_;
                v.keys.push_back(std::move(key));
                v.values.push_back(value());
                const char d = peek();
                ++i_;
                if (d == '}') return v;
                if (d != ',') throw std::runtime_error("missing ',' in object");
            }
        }
        if (c == '[') {
            v.type = JValue::Type::array;
            ++i_;
            if (peek() == ']') {
                ++i_;
                return v;
            }
            for (;;) {
                v.a.push_back(value());
                const char d = peek();
                ++i_;
                if (d == ']') return v;
                if (d != ',') throw std::runtime_error("missing ',' in array");
            }
        }
        if (c == '"') {
            v.type = JValue::Type::string;
            v.s = string();
            return v;
        }
        if (c == 't' || c == 'f') {
            v.type = JValue::Type::boolean;
            v.b = c == 't';
            expect(v.b ? "true" : "false");
            return v;
        }
        if (c == 'n') {
            expect("null");
            return v;
        }
        std::size_t end = i_;
        while (end < t_.size() && std::strchr("+-0123456789.eE", t_[end]) != nullptr) ++end;
        if (end == i_) throw std::runtime_error(fmt::format("unexpected '{}' in JSON", c));
        v.type = JValue::Type::number;
        v.n = std::stod(std::string(t_.substr(i_, end - i_)));
        i_ = end;
        return v;
    }
    std::string string()
    {
        ++i_; // opening quote
        std::string out;
        for (;;) {
            if (i_ >= t_.size()) throw std::runtime_error("unterminated JSON string");
            const auto c = static_cast<unsigned char>(t_[i_++]);
            if (c == '"') return out;
            if (c < 0x20) throw std::runtime_error("control byte inside a JSON string");
            if (c != '\\') {
                out += static_cast<char>(c);
                continue;
            }
            const char e = t_.at(i_++);
            switch (e) {
            case '"': out += '"'; break;
            case '\\': out += '\\'; break;
            case '/': out += '/'; break;
            case 'n': out += '\n'; break;
            case 't': out += '\t'; break;
            case 'r': out += '\r'; break;
            case 'b': out += '\b'; break;
            case 'f': out += '\f'; break;
            case 'u': {
                const unsigned cp = std::stoul(std::string(t_.substr(i_, 4)), nullptr, 16);
                i_ += 4;
                // Enough for this test: code points below U+0800, as UTF-8.
                if (cp < 0x80) {
                    out += static_cast<char>(cp);
                } else {
                    out += static_cast<char>(0xc0 | (cp >> 6));
                    out += static_cast<char>(0x80 | (cp & 0x3f));
                }
                break;
            }
            default: throw std::runtime_error("bad escape in JSON string");
            }
        }
    }

    std::string_view t_;
    std::size_t i_ = 0;
};

// parse_json - the one JSON document of `text`; fails the test (and returns null) if invalid.
JValue parse_json(const std::string& text)
{
    try {
        return JsonReader(text).document();
    } catch (const std::exception& e) {
        ADD_FAILURE() << "invalid JSON (" << e.what() << "): " << text;
        return {};
    }
}

// ---- running relayguardctl ----

struct CtlResult {
    int code = -1; // -1: did not exit normally in time
    std::string out;
    std::string err;
};

int open_pidfd(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }

// ---- Redis, for looking at what relayguardctl stored ----

class RedisProbe {
public:
    explicit RedisProbe(const std::string& unix_path)
    {
        relayguard::redis::ClientConfig config;
        config.address = "unix:" + unix_path;
        config.command_timeout = 5s; // a loaded test machine, not production
        spdlog::set_level(spdlog::level::warn); // the client's connect/close lines are noise here
        client_ = std::make_unique<relayguard::redis::Client>(io_.get_executor(), config);
        client_->start();
        const auto deadline = Clock::now() + 5s;
        while (!client_->connected() && Clock::now() < deadline) io_.run_one_for(10ms);
        if (!client_->connected()) throw std::runtime_error("no connection to " + config.address);
    }
    ~RedisProbe()
    {
        client_->close();
        io_.run_for(100ms);
    }

    // cmd - one command that must not fail (an error reply is returned as such).
    Reply cmd(std::vector<std::string> args)
    {
        std::optional<boost::system::result<Reply, std::error_code>> out;
        asio::co_spawn(io_, send(*client_, std::move(args)), [&](std::exception_ptr e, auto value) {
            if (!e) out.emplace(std::move(value));
        });
        const auto deadline = Clock::now() + step_limit;
        while (!out && Clock::now() < deadline) io_.run_one_for(100ms);
        if (!out) throw std::runtime_error("redis command not done in time");
        if (!*out) throw std::runtime_error("redis: " + out->error().message());
        return std::move(**out);
    }

    std::optional<std::string> hget(const std::string& key, const std::string& field)
    {
        Reply r = cmd({"HGET", key, field});
        if (r.type != Reply::Type::string) return std::nullopt;
        return r.str;
    }
    std::map<std::string, std::string> hgetall(const std::string& key)
    {
        Reply r = cmd({"HGETALL", key});
        std::map<std::string, std::string> out;
        for (std::size_t i = 0; i + 1 < r.elements.size(); i += 2) out[r.elements[i].str] = r.elements[i + 1].str;
        return out;
    }
    std::set<std::string> smembers(const std::string& key)
    {
        std::set<std::string> out;
        for (const auto& e : cmd({"SMEMBERS", key}).elements) out.insert(e.str);
        return out;
    }
    long long integer(std::vector<std::string> args) { return cmd(std::move(args)).integer; }

    // snapshot - every key with its type, contents and whether it has a TTL: what a command
    // that must change nothing must leave exactly as it was.
    std::map<std::string, std::string> snapshot()
    {
        std::map<std::string, std::string> out;
        for (const auto& k : cmd({"KEYS", "*"}).elements) {
            const std::string type = cmd({"TYPE", k.str}).str;
            std::string content;
            if (type == "hash") {
                for (const auto& [f, v] : hgetall(k.str)) content += f + "=" + v + ";";
            } else if (type == "set") {
                for (const auto& m : smembers(k.str)) content += m + ";";
            } else if (type == "zset") {
                for (const auto& e : cmd({"ZRANGE", k.str, "0", "-1", "WITHSCORES"}).elements) content += e.str + ";";
            } else if (type == "string") {
                // Counters and HyperLogLogs (PFADD changes the string).
                content = cmd({"GET", k.str}).str;
            } else {
                content = "?";
            }
            const bool ttl = integer({"PTTL", k.str}) >= 0;
            out[k.str] = type + ":" + content + (ttl ? " ttl" : " persistent");
        }
        return out;
    }

private:
    static asio::awaitable<boost::system::result<Reply, std::error_code>>
    send(relayguard::redis::Client& client, std::vector<std::string> args)
    {
        std::vector<std::string_view> argv(args.begin(), args.end());
        co_return co_await client.command(std::move(argv));
    }

    asio::io_context io_;
    std::unique_ptr<relayguard::redis::Client> client_;
};

// ---- configs and requests ----

constexpr std::string_view limits_toml = R"(
[[limit]]
name = "login_recipients"
key = "sasl_username"
unit = "recipients"
rates = "3/1h"

[[limit]]
name = "login_messages"
key = "sasl_username"
unit = "messages"
rates = "100/1h"

[[limit]]
name = "login_daily"
key = "sasl_username"
unit = "recipients"
rates = "1000/1d"

[[limit]]
name = "client_recipients"
key = "client_address"
unit = "recipients"
rates = "50/1h"
prefix_v4 = 24
prefix_v6 = 48
)";

std::string config_text(const fs::path& socket, const std::string& store)
{
    return fmt::format(R"([server]
listen = ["unix:{}"]
threads = 1

[domains]
local = ["example.com"]

[checks.exempt]
networks = ["192.0.2.0/24"]

# Tracked (so that check has counts to show and must not add to them); never reached here.
[compromise]
enabled = true
[compromise.warn]
networks = 50
{}
{})",
                       socket.string(), limits_toml, store);
}

std::string redis_store(const std::string& address)
{
    return fmt::format(R"(
[store]
type = "redis"
on_error = "defer"

[store.redis]
address = "{}"
timeout = "2s"
)",
                       address);
}

// An authenticated RCPT over submission with TLS: passes every static check.
std::string auth_rcpt(std::string_view login, std::string_view recipient, std::string_view instance)
{
    return fmt::format("request=smtpd_access_policy\n"
                       "protocol_state=RCPT\n"
                       "protocol_name=ESMTP\n"
                       "client_address=198.51.100.7\n"
                       "client_name=client.example.org\n"
                       "server_address=203.0.113.25\n"
                       "server_port=587\n"
                       "helo_name=client.example.org\n"
                       "sender={0}\n"
                       "recipient={1}\n"
                       "instance={2}\n"
                       "size=0\n"
                       "sasl_method=PLAIN\n"
                       "sasl_username={0}\n"
                       "encryption_protocol=TLSv1.3\n"
                       "policy_context=\n"
                       "\n",
                       login, recipient, instance);
}

// An unauthenticated RCPT to a domain that is not local: the relay check refuses it.
std::string relay_rcpt()
{
    return "request=smtpd_access_policy\n"
           "protocol_state=RCPT\n"
           "client_address=198.51.100.9\n"
           "server_port=25\n"
           "sender=someone@example.org\n"
           "recipient=victim@example.net\n"
           "instance=77.relay\n"
           "sasl_username=\n"
           "\n";
}

std::string action(std::string_view text) { return fmt::format("action={}\n\n", text); }

constexpr std::string_view login_recipients_full =
    "450 4.7.1 Rate limit login_recipients exceeded, retry in";

// ---- fixtures ----

class CtlBase : public ::testing::Test {
protected:
    // ctl - run relayguardctl with `args` (no --config added), `input` on its stdin.
    CtlResult ctl(const std::vector<std::string>& args, const std::string& input = "",
                  const std::vector<std::string>& extra_env = {})
    {
        const int n = runs_++;
        const fs::path in = dir_ / fmt::format("ctl{}.in", n);
        const fs::path out = dir_ / fmt::format("ctl{}.out", n);
        const fs::path err = dir_ / fmt::format("ctl{}.err", n);
        write_file(in, input);
        const std::string binary = (binary_dir() / "relayguardctl").string();
        std::vector<std::string> all{binary};
        all.insert(all.end(), args.begin(), args.end());
        std::vector<char*> argv;
        for (auto& a : all) argv.push_back(a.data());
        argv.push_back(nullptr);
        std::vector<std::string> env_strings(extra_env);
        for (char** e = environ; *e; ++e)
            if (!std::string_view(*e).starts_with("SUDO_USER=")) env_strings.emplace_back(*e);
        std::vector<char*> envp;
        for (auto& e : env_strings) envp.push_back(e.data());
        envp.push_back(nullptr);

        const int in_fd = open(in.c_str(), O_RDONLY | O_CLOEXEC);
        const int out_fd = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        const int err_fd = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        EXPECT_TRUE(in_fd >= 0 && out_fd >= 0 && err_fd >= 0) << std::strerror(errno);
        const pid_t pid = fork();
        if (pid == 0) {
            if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0) _exit(126);
            execve(binary.c_str(), argv.data(), envp.data());
            _exit(127);
        }
        close(in_fd);
        close(out_fd);
        close(err_fd);
        CtlResult result;
        if (pid < 0) {
            ADD_FAILURE() << "fork: " << std::strerror(errno);
            return result;
        }
        const int fd = open_pidfd(pid);
        pollfd p{fd, POLLIN, 0};
        const int ready = fd >= 0 ? poll(&p, 1, static_cast<int>(step_limit.count())) : 0;
        if (fd >= 0) close(fd);
        if (ready <= 0) {
            ADD_FAILURE() << "relayguardctl " << fmt::format("{}", fmt::join(args, " ")) << " did not exit in time";
            kill(pid, SIGKILL);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        if (ready > 0 && WIFEXITED(status)) result.code = WEXITSTATUS(status);
        result.out = relayguard::testing::slurp(out);
        result.err = relayguard::testing::slurp(err);
        return result;
    }

    TempDir dir_;
    int runs_ = 0;
};

// A Redis and a config whose store is that Redis; a probe to look inside.
class Ctl : public CtlBase {
protected:
    void SetUp() override
    {
        config_ = dir_ / "relayguard.toml";
        write_file(config_, config_text(socket_, redis_store("unix:" + redis_.unix_path())));
        probe_ = std::make_unique<RedisProbe>(redis_.unix_path());
    }

    // run - relayguardctl --config CONFIG ARGS.
    CtlResult run(std::vector<std::string> args, const std::string& input = "",
                  const std::vector<std::string>& extra_env = {})
    {
        args.insert(args.begin(), {"--config", config_.string()});
        return ctl(args, input, extra_env);
    }

    // run_json - the same with --json, expecting exit status `want_code`; the parsed output.
    JValue run_json(std::vector<std::string> args, int want_code = 0, const std::string& input = "")
    {
        args.push_back("--json");
        CtlResult r = run(args, input);
        EXPECT_EQ(r.code, want_code) << fmt::format("{}", fmt::join(args, " ")) << "\nstderr: " << r.err;
        return parse_json(r.out);
    }

    RedisServer redis_;
    fs::path socket_ = dir_ / "policy.sock";
    fs::path config_;
    std::unique_ptr<RedisProbe> probe_;
};

// The daemon too, on the same config: what relayguardctl changes must show in its next answer.
class CtlDaemon : public Ctl {
protected:
    void SetUp() override
    {
        Ctl::SetUp();
        daemon_ = std::make_unique<DaemonProcess>(config_, dir_.path(), "daemon");
        ASSERT_TRUE(daemon_->wait_started()) << "daemon did not start:\n" << daemon_->log();
        client_.emplace(PolicyClient::unix_socket(socket_));
        ASSERT_TRUE(client_->connected());
    }

    std::string ask(std::string_view request) { return client_->ask(request); }

    std::unique_ptr<DaemonProcess> daemon_;
    std::optional<PolicyClient> client_;
};

const std::string prefix = "rg:";

// ---- help and usage ----

const std::vector<std::string> command_paths = {
    "limits set", "limits get", "limits unset", "limits list", "usage",         "reset",
    "suspend",    "unsuspend",  "suspended",    "owners add",  "owners remove", "owners list",
    "domains add", "domains remove", "domains list", "check",
};

std::vector<std::string> words(const std::string& path)
{
    std::vector<std::string> out;
    std::size_t start = 0;
    for (std::size_t sp; (sp = path.find(' ', start)) != std::string::npos; start = sp + 1)
        out.push_back(path.substr(start, sp - start));
    out.push_back(path.substr(start));
    return out;
}

TEST_F(CtlBase, EveryCommandHasHelp)
{
    for (const auto& path : command_paths) {
        for (const char* flag : {"--help", "-h"}) {
            auto args = words(path);
            args.push_back(flag);
            CtlResult r = ctl(args);
            EXPECT_EQ(r.code, 0) << path << " " << flag;
            EXPECT_EQ(r.err, "") << path;
            const std::string want = "usage: relayguardctl " + path + " ";
            EXPECT_TRUE(r.out.starts_with(want)) << "got=" << r.out << " want prefix=" << want;
            EXPECT_NE(r.out.find("exit status"), std::string::npos) << path << ": got=" << r.out;
        }
    }
}

TEST_F(CtlBase, MainAndGroupHelpListEveryCommand)
{
    CtlResult r = ctl({"--help"});
    EXPECT_EQ(r.code, 0);
    EXPECT_TRUE(r.out.starts_with("usage: relayguardctl ")) << "got=" << r.out;
    for (const auto& path : command_paths)
        EXPECT_NE(r.out.find("  " + path + " "), std::string::npos) << "help lacks " << path << "; got=" << r.out;
    for (const char* option : {"--config FILE", "--json", "--login", "--client", "--global", "--version"})
        EXPECT_NE(r.out.find(option), std::string::npos) << "help lacks " << option;

    for (const std::string group : {"limits", "owners", "domains"}) {
        CtlResult g = ctl({group, "--help"});
        EXPECT_EQ(g.code, 0) << group;
        for (const auto& path : command_paths) {
            if (path.starts_with(group + " ")) {
                EXPECT_NE(g.out.find("relayguardctl " + path), std::string::npos) << "got=" << g.out;
            }
        }
    }

    CtlResult v = ctl({"--version"});
    EXPECT_EQ(v.code, 0);
    EXPECT_EQ(v.out, fmt::format("relayguardctl {}\n", RELAYGUARD_VERSION));
}

TEST_F(CtlBase, BadCommandLinesExitWith2)
{
    struct Case {
        std::vector<std::string> args;
        std::string message; // start of stderr
    };
    const Case cases[] = {
        {{}, "relayguardctl: no command given\n"},
        {{"frobnicate"}, "relayguardctl: unknown command frobnicate\n"},
        {{"limits"}, "relayguardctl: limits needs a subcommand\n"},
        {{"limits", "frob"}, "relayguardctl: unknown command limits frob\n"},
        {{"usage", "--bogus"}, "relayguardctl: unknown option --bogus\n"},
        {{"usage"}, "relayguardctl: usage: give a KEY"},
        {{"usage", "--login", "a", "--client", "192.0.2.1"}, "relayguardctl: give one KEY, not both --login and --client\n"},
        {{"usage", "--login"}, "relayguardctl: option --login needs a value\n"},
        {{"usage", "--client", "not-an-ip"}, "relayguardctl: --client: 'not-an-ip' is not an IP address"},
        {{"usage", "--sender-domain", "a@example.com"}, "relayguardctl: --sender-domain: give a domain"},
        {{"usage", "--login", "a", "extra"}, "relayguardctl: usage: unexpected argument extra\n"},
        {{"limits", "set", "--login", "a", "login_messages"}, "relayguardctl: limits set: missing arguments\n"},
        {{"limits", "get", "login_messages"}, "relayguardctl: limits get: give a KEY"},
        {{"limits", "list", "--limit", "x"}, "relayguardctl: limits list: option --limit does not apply\n"},
        {{"suspend", "--login", "a"}, "relayguardctl: suspend: give --reason TEXT\n"},
        {{"suspend", "--client", "192.0.2.1", "--reason", "x"}, "relayguardctl: suspend: option --client does not apply"},
        {{"suspend", "--login", "a", "--reason", "x", "--for", "soon"}, "relayguardctl: --for: 'soon' is not a duration"},
        {{"suspend", "--login", "a", "--reason", "x", "--for", "0s"}, "relayguardctl: --for: '0s' is not a duration"},
        {{"unsuspend"}, "relayguardctl: unsuspend: give --login LOGIN\n"},
        {{"owners", "add", "@example.com"}, "relayguardctl: owners add: missing arguments\n"},
        {{"owners", "list", "--login", "a"}, "relayguardctl: owners list: option --login does not apply\n"},
        {{"domains", "add"}, "relayguardctl: domains add: missing arguments\n"},
        {{"check", "a", "b"}, "relayguardctl: check: unexpected argument b\n"},
        {{"--global=x", "usage"}, "relayguardctl: option --global takes no value\n"},
    };
    for (const auto& c : cases) {
        CtlResult r = ctl(c.args);
        const std::string args = fmt::format("{}", fmt::join(c.args, " "));
        EXPECT_EQ(r.code, 2) << args << "; stderr=" << r.err;
        EXPECT_TRUE(r.err.starts_with(c.message)) << args << ": got=" << r.err << " want prefix=" << c.message;
        EXPECT_NE(r.err.find("usage: relayguardctl"), std::string::npos) << args << ": no usage line; got=" << r.err;
        EXPECT_EQ(r.out, "") << args;
    }
}

// ---- without Redis ----

TEST_F(CtlBase, EmbeddedStoreRefusesRedisCommandsButChecks)
{
    const fs::path config = dir_ / "embedded.toml";
    write_file(config, config_text(dir_ / "policy.sock", "[store]\ntype = \"embedded\"\n"));
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"usage", "--login", "alice@example.com"},
             {"limits", "set", "--global", "login_messages", "5/1m"},
             {"suspended"},
             {"domains", "list"}}) {
        auto all = args;
        all.insert(all.begin(), {"-c", config.string()});
        CtlResult r = ctl(all);
        EXPECT_EQ(r.code, 1) << args[0];
        EXPECT_NE(r.err.find("store.type is \"embedded\""), std::string::npos) << "got=" << r.err;
    }

    CtlResult r = ctl({"-c", config.string(), "check", "--json"}, auth_rcpt("alice@example.com", "bob@example.net", "1.a"));
    ASSERT_EQ(r.code, 0) << r.err;
    const JValue doc = parse_json(r.out);
    EXPECT_EQ(doc["store"].s, "embedded");
    EXPECT_EQ(doc["requests"][0]["reply"].s, "DUNNO");
    // A fresh store: login_recipients 3/1h leaves 2 after this request.
    const JValue& first = doc["requests"][0]["limits"][0];
    EXPECT_EQ(first["limit"].s, "login_recipients");
    EXPECT_EQ(first["windows"][0]["remaining"].num(), 2);
}

TEST_F(CtlBase, UnreachableRedisExits1WithinTheConnectWait)
{
    const fs::path config = dir_ / "nowhere.toml";
    const std::string address = "unix:" + (dir_ / "no-redis.sock").string();
    write_file(config, config_text(dir_ / "policy.sock", redis_store(address)));
    const auto start = Clock::now();
    CtlResult r = ctl({"-c", config.string(), "usage", "--global"});
    const auto took = Clock::now() - start;
    EXPECT_EQ(r.code, 1);
    const std::string want = "relayguardctl: cannot reach redis " + address + ": ";
    EXPECT_TRUE(r.err.starts_with(want)) << "got=" << r.err << " want prefix=" << want;
    EXPECT_EQ(r.err.find("retrying"), std::string::npos) << "the client's own log leaked: " << r.err;
    EXPECT_LT(took, 5s);
}

TEST_F(CtlBase, BadConfigExits1WithItsError)
{
    const fs::path config = dir_ / "bad.toml";
    write_file(config, "[server]\nlisten = []\n");
    CtlResult r = ctl({"-c", config.string(), "domains", "list"});
    EXPECT_EQ(r.code, 1);
    EXPECT_TRUE(r.err.starts_with("relayguardctl: " + config.string() + ":")) << "got=" << r.err;
}

// ---- limits ----

TEST_F(Ctl, LimitsSetStoresTheCanonicalOverrideUnderTheDaemonsKey)
{
    struct Case {
        std::vector<std::string> key; // the KEY option(s)
        std::string limit;
        std::string rates;
        LimitKey want_key;
        std::string want_value;
        std::string want_stored;
    };
    const Case cases[] = {
        {{"--login", "Alice@Example.COM"}, "login_recipients", "10/1m, 100/1h", LimitKey::sasl_username,
         "alice@example.com", "10/60s,100/3600s"},
        {{"--login", "@Example.com"}, "login_messages", "unlimited", LimitKey::sasl_username, "@example.com",
         "unlimited"},
        {{"--login", "we{ird}%x"}, "login_daily", "0", LimitKey::sasl_username, "we{ird}%x", "0"},
        {{"--client", "198.51.100.77/24"}, "client_recipients", "5/1m", LimitKey::client_address, "198.51.100.0/24",
         "5/60s"},
        {{"--client", "2001:DB8:1:2::7/48"}, "client_recipients", "1/1s", LimitKey::client_address, "2001:db8:1::/48",
         "1/1s"},
    };
    for (const auto& c : cases) {
        std::vector<std::string> args{"limits", "set"};
        args.insert(args.end(), c.key.begin(), c.key.end());
        args.insert(args.end(), {c.limit, c.rates});
        const JValue doc = run_json(args);
        EXPECT_EQ(doc["value"].s, c.want_value) << c.key[1];
        EXPECT_EQ(doc["override"].s, c.want_stored) << c.key[1];
        const std::string hash = relayguard::override_key(prefix, c.want_key, c.want_value);
        EXPECT_EQ(probe_->hget(hash, c.limit), c.want_stored) << "hash " << hash;
        EXPECT_EQ(probe_->integer({"PTTL", hash}), -1) << "an override never expires";
    }
    // The escaping is the schema's: '{', '}' and '%' written as %XX.
    EXPECT_EQ(probe_->integer({"EXISTS", "rg:{l:we%7Bird%7D%25x}:o"}), 1);

    // get, then unset twice (the second finds nothing), then "inherit" does what unset does.
    const JValue got = run_json({"limits", "get", "--login", "alice@example.com", "login_recipients"});
    EXPECT_EQ(got["override"].s, "10/60s,100/3600s");
    EXPECT_EQ(got["effective"].s, "10/60s,100/3600s");
    EXPECT_EQ(got["source"].s, "override");
    EXPECT_EQ(got["config"].s, "3/3600s");

    run_json({"limits", "unset", "--login", "ALICE@example.com", "login_recipients"});
    EXPECT_EQ(probe_->hget(relayguard::override_key(prefix, LimitKey::sasl_username, "alice@example.com"),
                           "login_recipients"),
              std::nullopt);
    CtlResult again = run({"limits", "unset", "--login", "alice@example.com", "login_recipients"});
    EXPECT_EQ(again.code, 1);
    EXPECT_NE(again.err.find("has no override for login_recipients"), std::string::npos) << "got=" << again.err;

    run_json({"limits", "set", "--login", "@example.com", "login_messages", "inherit"});
    EXPECT_EQ(probe_->hget(relayguard::override_key(prefix, LimitKey::sasl_username, "@example.com"), "login_messages"),
              std::nullopt);
}

TEST_F(Ctl, LimitsSetRefusesWhatCouldNeverApply)
{
    struct Case {
        std::vector<std::string> args;
        int code;
        std::string message;
    };
    const Case cases[] = {
        {{"--login", "a@example.com", "no_such_limit", "5/1m"}, 1, "no limit no_such_limit in "},
        {{"--login", "a@example.com", "client_recipients", "5/1m"}, 1,
         "limit client_recipients is keyed by client_address, not sasl_username: use --client"},
        {{"--client", "198.51.100.7", "client_recipients", "5/1m"}, 1,
         "limit client_recipients counts IPv4 clients per /24 network, so an override of 198.51.100.7/32 would never "
         "apply; use --client 198.51.100.0/24"},
        {{"--client", "198.51.0.0/16", "client_recipients", "5/1m"}, 1,
         "limit client_recipients counts IPv4 clients per /24 network, so an override of 198.51.0.0/16"},
        {{"--login", "a@example.com", "login_messages", "lots"}, 2, "bad RATES 'lots': "},
        {{"--login", "a@example.com", "login_messages", "5/1m, 5/60s"}, 2, "bad RATES"},
    };
    for (const auto& c : cases) {
        std::vector<std::string> args{"limits", "set"};
        args.insert(args.end(), c.args.begin(), c.args.end());
        CtlResult r = run(args);
        EXPECT_EQ(r.code, c.code) << c.args[2] << " " << c.args[3];
        EXPECT_TRUE(r.err.starts_with("relayguardctl: " + c.message)) << "got=" << r.err << " want=" << c.message;
    }
    EXPECT_EQ(probe_->integer({"DBSIZE"}), 0) << "a refused set wrote something";
}

TEST_F(Ctl, LimitsListShowsWhereEachRateComesFrom)
{
    run_json({"limits", "set", "--login", "@example.com", "login_messages", "7/1h"});
    run_json({"limits", "set", "--login", "alice@example.com", "login_recipients", "9/1h"});
    EXPECT_EQ(run({"limits", "set", "--login", "alice@example.com", "retired_limit", "1/1h"}).code, 1)
        << "not a limit of the config";
    probe_->cmd({"HSET", relayguard::override_key(prefix, LimitKey::sasl_username, "alice@example.com"),
                 "retired_limit", "1/3600s"});

    const JValue doc = run_json({"limits", "list", "--login", "Alice@example.com"});
    EXPECT_EQ(doc["value"].s, "alice@example.com");
    EXPECT_EQ(doc["parent"].s, "@example.com");
    std::map<std::string, std::pair<std::string, std::string>> got; // limit -> (effective, source)
    for (const auto& row : doc["limits"].a) got[row["limit"].s] = {row["effective"].s, row["source"].s};
    const std::map<std::string, std::pair<std::string, std::string>> want = {
        {"login_recipients", {"9/3600s", "override"}},
        {"login_messages", {"7/3600s", "parent_override"}},
        {"login_daily", {"1000/86400s", "config"}},
    };
    EXPECT_EQ(got, want);
    ASSERT_EQ(doc["unused_overrides"].a.size(), 1u);
    EXPECT_EQ(doc["unused_overrides"][0]["limit"].s, "retired_limit");

    // Human form names the sources.
    CtlResult text = run({"limits", "list", "--login", "alice@example.com"});
    EXPECT_EQ(text.code, 0);
    for (const char* part : {"login override", "domain override (@example.com)", "config default"})
        EXPECT_NE(text.out.find(part), std::string::npos) << "lacks " << part << "; got=" << text.out;

    // Without a key: every override stored.
    const JValue all = run_json({"limits", "list"});
    std::set<std::string> listed;
    for (const auto& o : all["overrides"].a) listed.insert(o["value"].s + " " + o["limit"].s + " " + o["override"].s);
    EXPECT_EQ(listed, (std::set<std::string>{"@example.com login_messages 7/3600s",
                                             "alice@example.com login_recipients 9/3600s",
                                             "alice@example.com retired_limit 1/3600s"}));
}

// ---- against the daemon ----

TEST_F(CtlDaemon, OverridesShowInTheDaemonsNextAnswer)
{
    const std::string login = "alice@example.com";
    EXPECT_EQ(ask(auth_rcpt(login, "r1@example.net", "1.a")), action("DUNNO"));

    run_json({"limits", "set", "--login", login, "login_recipients", "0"});
    const std::string refused = ask(auth_rcpt(login, "r2@example.net", "1.a"));
    // A rate of 0 blocks: no retry time to promise (rate_stage.cpp block_reply).
    EXPECT_EQ(refused, action("450 4.7.1 Rate limit login_recipients exceeded")) << "got=" << refused;

    run_json({"limits", "unset", "--login", login, "login_recipients"});
    EXPECT_EQ(ask(auth_rcpt(login, "r3@example.net", "1.a")), action("DUNNO"));

    // A domain override reaches every login of the domain that has none of its own.
    run_json({"limits", "set", "--login", "@example.com", "login_daily", "0"});
    const std::string by_domain = ask(auth_rcpt("bob@example.com", "r4@example.net", "2.b"));
    EXPECT_TRUE(by_domain.starts_with("action=450 4.7.1 Rate limit login_daily exceeded")) << "got=" << by_domain;
    run_json({"limits", "set", "--login", "bob@example.com", "login_daily", "unlimited"});
    EXPECT_EQ(ask(auth_rcpt("bob@example.com", "r5@example.net", "2.b")), action("DUNNO"));

    // A network override, as the daemon masks the client (198.51.100.7 -> /24).
    run_json({"limits", "set", "--client", "198.51.100.0/24", "client_recipients", "0"});
    // (A login of another domain: example.com's login_daily override above would refuse first.)
    const std::string by_network = ask(auth_rcpt("carol@example.org", "r6@example.net", "3.c"));
    EXPECT_TRUE(by_network.starts_with("action=450 4.7.1 Rate limit client_recipients exceeded")) << "got=" << by_network;
}

TEST_F(CtlDaemon, UsageShowsWhatTheDaemonCountedAndResetClearsIt)
{
    const std::string login = "dave@example.com";
    for (int i = 0; i < 3; ++i)
        EXPECT_EQ(ask(auth_rcpt(login, fmt::format("r{}@example.net", i), "4.d")), action("DUNNO")) << i;
    const std::string full = ask(auth_rcpt(login, "r9@example.net", "4.d"));
    EXPECT_TRUE(full.starts_with("action=" + std::string(login_recipients_full))) << "got=" << full;

    JValue doc = run_json({"usage", "--login", "Dave@Example.com"});
    std::map<std::string, const JValue*> by_limit;
    for (const auto& row : doc["limits"].a) by_limit[row["limit"].s] = &row;
    ASSERT_TRUE(by_limit.contains("login_recipients") && by_limit.contains("login_messages") &&
                by_limit.contains("login_daily"));
    const JValue& recipients = *by_limit["login_recipients"];
    EXPECT_EQ(recipients["value"].s, login);
    EXPECT_EQ(recipients["source"].s, "config");
    EXPECT_EQ(recipients["refused"].num(), 1);
    EXPECT_EQ(recipients["windows"][0]["used"].num(), 3);
    EXPECT_EQ(recipients["windows"][0]["remaining"].num(), 0);
    // Three of 3/1h: completely refilled after (nearly) an hour.
    EXPECT_GT(recipients["windows"][0]["full_in_ms"].num(), 3'500'000);
    EXPECT_LE(recipients["windows"][0]["full_in_ms"].num(), 3'600'000);
    EXPECT_EQ((*by_limit["login_messages"])["windows"][0]["used"].num(), 1) << "one message (one instance)";
    EXPECT_EQ((*by_limit["login_daily"])["windows"][0]["used"].num(), 3);

    // The client address is shown as the network the limit counts.
    JValue client = run_json({"usage", "--client", "198.51.100.200", "--limit", "client_recipients"});
    ASSERT_EQ(client["limits"].a.size(), 1u);
    EXPECT_EQ(client["limits"][0]["value"].s, "198.51.100.0/24");
    EXPECT_EQ(client["limits"][0]["windows"][0]["used"].num(), 3);
    JValue wide = run_json({"usage", "--client", "198.51.0.0/16"});
    EXPECT_EQ(wide["limits"].a.size(), 0u);
    EXPECT_EQ(wide["not_applicable"][0]["limit"].s, "client_recipients");

    // Human output carries the same figures.
    CtlResult text = run({"usage", "--login", login, "--limit", "login_recipients"});
    EXPECT_EQ(text.code, 0);
    EXPECT_NE(text.out.find("used 3"), std::string::npos) << "got=" << text.out;
    EXPECT_NE(text.out.find("refused 1 times"), std::string::npos) << "got=" << text.out;

    // Resetting one limit leaves the others' counters.
    const std::string state = relayguard::state_key(prefix, LimitKey::sasl_username, login);
    run_json({"reset", "--login", login, "--limit", "login_recipients"});
    auto fields = probe_->hgetall(state);
    for (const auto& [name, value] : fields)
        EXPECT_FALSE(name.find(":login_recipients") != std::string::npos) << "left " << name << "=" << value;
    EXPECT_FALSE(fields.contains("t:login_recipients:3600"));
    EXPECT_FALSE(fields.contains("r:login_recipients"));
    EXPECT_TRUE(fields.contains("t:login_daily:86400"));
    EXPECT_TRUE(fields.contains("t:login_messages:3600"));
    EXPECT_EQ(ask(auth_rcpt(login, "r10@example.net", "5.d")), action("DUNNO")) << "the very next answer";

    // A full reset removes the key value's state; the next request starts afresh.
    for (int i = 0; i < 2; ++i) ask(auth_rcpt(login, "r11@example.net", "5.d"));
    EXPECT_TRUE(ask(auth_rcpt(login, "r12@example.net", "5.d")).starts_with("action=450 "));
    JValue reset = run_json({"reset", "--login", login});
    ASSERT_EQ(reset["reset"].a.size(), 1u);
    EXPECT_EQ(reset["reset"][0]["value"].s, login);
    EXPECT_EQ(probe_->integer({"EXISTS", state}), 0);
    EXPECT_EQ(ask(auth_rcpt(login, "r13@example.net", "6.d")), action("DUNNO"));

    // Nothing left to reset for a login never seen: "not found".
    CtlResult none = run({"reset", "--login", "nobody@example.com"});
    EXPECT_EQ(none.code, 1);
    EXPECT_NE(none.err.find("no counters stored for login nobody@example.com"), std::string::npos) << none.err;
}

TEST_F(CtlDaemon, CheckConsumesNothing)
{
    const std::string login = "erin@example.com";
    ask(auth_rcpt(login, "r1@example.net", "7.e")); // some state to compare
    run_json({"limits", "set", "--login", "frank@example.com", "login_recipients", "0"});
    const auto before = probe_->snapshot();
    ASSERT_FALSE(before.empty());

    // A request that passes (a new instance: no message marker may appear), one refused by a
    // limit (the daemon would count the refusal), one refused by the relay check.
    const std::string passing = auth_rcpt(login, "r2@example.net", "8.new-instance");
    JValue doc = run_json({"check", "-"}, 0, passing);
    const JValue& req = doc["requests"][0];
    EXPECT_EQ(req["reply"].s, "DUNNO");
    EXPECT_TRUE(req["decided_by"].is_null());
    std::vector<std::string> checks;
    for (const auto& c : req["checks"].a) checks.push_back(c["check"].s + ":" + c["verdict"].s);
    EXPECT_EQ(checks, (std::vector<std::string>{"exempt:not_applicable", "suspended:pass", "auth_required:pass",
                                                "plaintext_auth:pass",
                                                "relay:not_applicable", "sender_ownership:pass", "rate_limits:pass"}));
    const JValue& first = req["limits"][0];
    EXPECT_EQ(first["limit"].s, "login_recipients");
    EXPECT_EQ(first["value"].s, login);
    EXPECT_EQ(first["cost"].num(), 1);
    EXPECT_EQ(first["windows"][0]["remaining"].num(), 1) << "3/1h, one counted, this one would leave 1";

    JValue limited = run_json({"check"}, 0, auth_rcpt("frank@example.com", "r3@example.net", "9.f"));
    EXPECT_EQ(limited["requests"][0]["decided_by"].s, "rate_limits");
    // frank's rate is 0: a block, whose reply promises no retry time.
    EXPECT_EQ(limited["requests"][0]["reply"].s, "450 4.7.1 Rate limit login_recipients exceeded");

    const fs::path file = dir_ / "relay.policy";
    write_file(file, relay_rcpt());
    JValue relay = run_json({"check", file.string()});
    EXPECT_EQ(relay["requests"][0]["decided_by"].s, "relay");
    EXPECT_EQ(relay["requests"][0]["reply"].s, "554 5.7.1 Relay access denied");
    EXPECT_EQ(relay["requests"][0]["limits"].a.size(), 0u);

    // The compromise signals as they stand, read without adding this request's network.
    EXPECT_EQ(req["live"]["compromise"]["counts"]["networks"].num(), 1) << "the one network the daemon counted";
    EXPECT_EQ(req["live"]["compromise"]["rung"].s, "none");
    EXPECT_FALSE(req["live"]["suspended"].b);
    // A login never seen, from a new network: check must not create its HyperLogLog.
    JValue fresh = run_json({"check"}, 0, auth_rcpt("newbie@example.com", "r4@example.net", "11.n"));
    EXPECT_EQ(fresh["requests"][0]["live"]["compromise"]["counts"]["networks"].num(), 0);

    EXPECT_EQ(probe_->snapshot(), before) << "check changed the store";

    // The daemon agrees with what check said for the passing request.
    EXPECT_EQ(ask(passing), action("DUNNO"));
    EXPECT_NE(probe_->snapshot(), before);
}

// An authenticated RCPT as auth_rcpt(), with another envelope sender.
std::string auth_rcpt_from(std::string_view login, std::string_view sender, std::string_view recipient)
{
    std::string r = auth_rcpt(login, recipient, "20.s");
    const std::string from = fmt::format("sender={}\n", login);
    r.replace(r.find(from), from.size(), fmt::format("sender={}\n", sender));
    return r;
}

const std::string suspended_reply(relayguard::default_suspended_reply);

TEST_F(CtlDaemon, SuspendAndUnsuspendShowInTheNextAnswer)
{
    const std::string login = "mike@example.com";
    EXPECT_EQ(ask(auth_rcpt(login, "r1@example.net", "30.m")), action("DUNNO"));
    run_json({"suspend", "--login", login, "--reason", "phished, ticket 7"});
    EXPECT_EQ(ask(auth_rcpt(login, "r2@example.net", "30.m")), action(suspended_reply)) << "the very next answer";
    EXPECT_EQ(ask(auth_rcpt("Mike@Example.COM", "r2@example.net", "30.m")), action(suspended_reply))
        << "logins compare without case";

    JValue check = run_json({"check"}, 0, auth_rcpt(login, "r3@example.net", "31.m"));
    EXPECT_EQ(check["requests"][0]["decided_by"].s, "suspended");
    EXPECT_TRUE(check["requests"][0]["live"]["suspended"].b);
    CtlResult text = run({"check"}, auth_rcpt(login, "r3@example.net", "31.m"));
    EXPECT_NE(text.out.find("phished, ticket 7"), std::string::npos) << "got=" << text.out;

    run_json({"unsuspend", "--login", login});
    EXPECT_EQ(ask(auth_rcpt(login, "r4@example.net", "32.m")), action("DUNNO"));
}

TEST_F(CtlDaemon, SuspensionWithADurationEndsInTheDaemonToo)
{
    const std::string login = "nina@example.com";
    run_json({"suspend", "--login", login, "--reason", "cool down", "--for", "1s"});
    EXPECT_EQ(ask(auth_rcpt(login, "r1@example.net", "40.n")), action(suspended_reply));
    // One bounded wait (the suspension ends within 2 s): BLPOP waits inside Redis, not here.
    const auto deadline = Clock::now() + 3s;
    std::string answer;
    int instance = 0;
    while ((answer = ask(auth_rcpt(login, "r2@example.net", fmt::format("41.{}", instance++)))) !=
               action("DUNNO") &&
           Clock::now() < deadline)
        probe_->cmd({"BLPOP", "relayguardctl-test:never", "0.1"});
    EXPECT_EQ(answer, action("DUNNO")) << "still refused after the suspension's end";
}

TEST_F(CtlDaemon, OwnersAndDomainsShowInTheNextAnswer)
{
    const std::string login = "olga@example.com";
    const std::string as_info = auth_rcpt_from(login, "info@example.com", "r1@example.net");
    const std::string refused = ask(as_info);
    EXPECT_EQ(refused, action(relayguard::Config{}.sender_ownership.reply)) << "got=" << refused;

    run_json({"owners", "add", "info@example.com", login});
    EXPECT_EQ(ask(as_info), action("DUNNO")) << "the very next answer";
    JValue check = run_json({"check"}, 0, as_info);
    EXPECT_TRUE(check["requests"][0]["live"]["sender_owned"].b);
    EXPECT_EQ(check["requests"][0]["reply"].s, "DUNNO");

    run_json({"owners", "remove", "info@example.com", login});
    EXPECT_EQ(ask(as_info), refused);

    // An unauthenticated relay to example.net: refused until example.net is a local domain.
    EXPECT_EQ(ask(relay_rcpt()), action("554 5.7.1 Relay access denied"));
    run_json({"domains", "add", "example.net"});
    EXPECT_EQ(ask(relay_rcpt()), action("DUNNO"));
    JValue relay = run_json({"check"}, 0, relay_rcpt());
    EXPECT_TRUE(relay["requests"][0]["live"]["recipient_domain_local"].b);
    run_json({"domains", "remove", "example.net"});
    EXPECT_EQ(ask(relay_rcpt()), action("554 5.7.1 Relay access denied"));
}

TEST_F(Ctl, CheckReadsSeveralRequestsAndReportsBadInput)
{
    // A conversation from a file, the last request without its empty line (hand-written).
    std::string two = auth_rcpt("gina@example.com", "a@example.net", "10.g") + relay_rcpt();
    two.pop_back();
    two.pop_back();
    JValue doc = run_json({"check"}, 0, two);
    ASSERT_EQ(doc["requests"].a.size(), 2u);
    EXPECT_EQ(doc["requests"][0]["reply"].s, "DUNNO");
    EXPECT_EQ(doc["requests"][1]["decided_by"].s, "relay");

    CtlResult text = run({"check"}, relay_rcpt());
    EXPECT_EQ(text.code, 0);
    EXPECT_NE(text.out.find("relay             fail"), std::string::npos) << "got=" << text.out;
    EXPECT_NE(text.out.find("reply: action=554 5.7.1 Relay access denied"), std::string::npos) << "got=" << text.out;

    CtlResult garbage = run({"check"}, "request=smtpd_access_policy\nno equals sign\n\n");
    EXPECT_EQ(garbage.code, 1);
    EXPECT_NE(garbage.err.find("request 1: "), std::string::npos) << "got=" << garbage.err;
    EXPECT_NE(garbage.err.find("without a reply"), std::string::npos) << "got=" << garbage.err;

    CtlResult empty = run({"check"}, "");
    EXPECT_EQ(empty.code, 1);
    EXPECT_NE(empty.err.find("no policy request"), std::string::npos) << "got=" << empty.err;

    CtlResult missing = run({"check", (dir_ / "nope.policy").string()});
    EXPECT_EQ(missing.code, 1);
    EXPECT_NE(missing.err.find("cannot open"), std::string::npos) << "got=" << missing.err;
}

// ---- suspensions ----

TEST_F(Ctl, SuspendListsAndUnsuspends)
{
    JValue doc = run_json({"suspend", "--login", "Bob@Example.com", "--reason", "spam run, ticket #42", "--by", "tester"});
    EXPECT_EQ(doc["login"].s, "bob@example.com");
    EXPECT_EQ(doc["until"].num(), 0);

    const std::string key = relayguard::suspension_key(prefix, "bob@example.com");
    auto fields = probe_->hgetall(key);
    EXPECT_EQ(fields["reason"], "spam run, ticket #42");
    EXPECT_EQ(fields["until"], "0");
    EXPECT_EQ(fields["by"], "operator tester");
    EXPECT_EQ(fields["since"], std::to_string(doc["since"].num()));
    EXPECT_EQ(probe_->integer({"PTTL", key}), -1) << "until lifted: no expiry";
    EXPECT_EQ(probe_->cmd({"ZSCORE", relayguard::suspended_index_key(prefix), "bob@example.com"}).str,
              fields["since"]);

    // The operator defaults to the invoking user ($SUDO_USER first).
    run_json({"suspend", "--login", "carol@example.com", "--reason", "phished"});
    CtlResult sudo = run({"suspend", "--login", "dan@example.com", "--reason", "x"}, "", {"SUDO_USER=admin7"});
    EXPECT_EQ(sudo.code, 0) << sudo.err;
    EXPECT_EQ(probe_->hget(relayguard::suspension_key(prefix, "dan@example.com"), "by"), "operator admin7");

    JValue list = run_json({"suspended"});
    std::map<std::string, std::string> by;
    for (const auto& x : list["suspended"].a) by[x["login"].s] = x["by"].s;
    EXPECT_EQ(by.size(), 3u);
    EXPECT_EQ(by["bob@example.com"], "operator tester");
    EXPECT_TRUE(by["carol@example.com"].starts_with("operator ")) << by["carol@example.com"];

    CtlResult one = run({"suspended", "--login", "BOB@example.com"});
    EXPECT_EQ(one.code, 0);
    EXPECT_NE(one.out.find("until lifted"), std::string::npos) << "got=" << one.out;
    EXPECT_NE(one.out.find("spam run, ticket #42"), std::string::npos) << "got=" << one.out;

    run_json({"unsuspend", "--login", "bob@example.com"});
    EXPECT_EQ(probe_->integer({"EXISTS", key}), 0);
    EXPECT_TRUE(probe_->cmd({"ZSCORE", relayguard::suspended_index_key(prefix), "bob@example.com"}).type ==
                Reply::Type::nil);
    EXPECT_EQ(run({"unsuspend", "--login", "bob@example.com"}).code, 1);
    JValue gone = run_json({"suspended", "--login", "bob@example.com"}, 1);
    EXPECT_FALSE(gone["suspended"].b);
}

TEST_F(Ctl, SuspensionWithADurationExpiresByItself)
{
    JValue doc = run_json({"suspend", "--login", "eve@example.com", "--reason", "cool down", "--for", "1s"});
    const long long length = doc["until"].num() - doc["since"].num();
    EXPECT_GE(length, 1);
    EXPECT_LE(length, 2);
    const std::string key = relayguard::suspension_key(prefix, "eve@example.com");
    const long long pttl = probe_->integer({"PTTL", key});
    EXPECT_GT(pttl, 0);
    EXPECT_LE(pttl, 2000);
    EXPECT_EQ(run({"suspended", "--login", "eve@example.com"}).code, 0);

    // Redis expires the hash at "until" (within 2 s); wait for that, bounded.
    const auto deadline = Clock::now() + 5s;
    // BLPOP on a key nobody writes: a 50 ms wait inside Redis between looks, not a sleep here.
    while (probe_->integer({"EXISTS", key}) == 1 && Clock::now() < deadline)
        probe_->cmd({"BLPOP", "relayguardctl-test:never", "0.05"});
    ASSERT_EQ(probe_->integer({"EXISTS", key}), 0) << "suspension did not expire";

    EXPECT_EQ(run({"suspended", "--login", "eve@example.com"}).code, 1);
    JValue list = run_json({"suspended"});
    EXPECT_EQ(list["suspended"].a.size(), 0u);
    EXPECT_EQ(probe_->integer({"ZCARD", relayguard::suspended_index_key(prefix)}), 0) << "stale index entry kept";
}

// ---- owners and domains ----

TEST_F(Ctl, OwnersAddRemoveList)
{
    JValue added = run_json({"owners", "add", "@Example.COM", "Alice@example.com", "bob"});
    EXPECT_EQ(added["added"].num(), 2);
    run_json({"owners", "add", "Info@example.com", "alice@example.com"});
    const std::string set = relayguard::owners_key(prefix, "@example.com");
    EXPECT_EQ(set, "rg:{own:@example.com}");
    EXPECT_EQ(probe_->smembers(set), (std::set<std::string>{"alice@example.com", "bob"}));
    EXPECT_EQ(probe_->smembers(relayguard::owners_key(prefix, "info@example.com")),
              (std::set<std::string>{"alice@example.com"}));

    JValue all = run_json({"owners", "list"});
    ASSERT_EQ(all["owners"].a.size(), 2u);
    EXPECT_EQ(all["owners"][0]["owner_of"].s, "@example.com");
    EXPECT_EQ(all["owners"][0]["logins"][1].s, "bob");
    EXPECT_EQ(all["owners"][1]["owner_of"].s, "info@example.com");

    run_json({"owners", "remove", "@example.com", "BOB"});
    EXPECT_EQ(probe_->smembers(set), (std::set<std::string>{"alice@example.com"}));
    EXPECT_EQ(run({"owners", "remove", "@example.com", "bob"}).code, 1);
    EXPECT_EQ(run({"owners", "list", "nobody@example.org"}).code, 1);
    EXPECT_EQ(run({"owners", "add", "not an address", "x"}).code, 2);
    EXPECT_EQ(run({"owners", "add", "@example.com", "two words"}).code, 2);
}

TEST_F(Ctl, DomainsAddRemoveList)
{
    JValue added = run_json({"domains", "add", "Example.ORG.", ".sub.example.net"});
    EXPECT_EQ(added["added"].num(), 2);
    EXPECT_EQ(probe_->smembers("rg:{domains}"), (std::set<std::string>{"example.org", ".sub.example.net"}));
    JValue list = run_json({"domains", "list"});
    ASSERT_EQ(list["domains"].a.size(), 2u);
    EXPECT_EQ(list["domains"][0].s, ".sub.example.net");
    run_json({"domains", "remove", "example.org"});
    EXPECT_EQ(probe_->smembers("rg:{domains}"), (std::set<std::string>{".sub.example.net"}));
    EXPECT_EQ(run({"domains", "remove", "example.org"}).code, 1);
    EXPECT_EQ(run({"domains", "add", "a@b"}).code, 2);
}

TEST_F(Ctl, OutputIsSafeForHostileValues)
{
    // Bytes a login can carry over SMTP: quotes, a backslash, invalid UTF-8.
    const std::string login = "q\"u\\o\xff" "te";
    probe_->cmd({"SADD", relayguard::owners_key(prefix, "@example.com"), login});
    JValue doc = run_json({"owners", "list", "@example.com"});
    ASSERT_EQ(doc["owners"][0]["logins"].a.size(), 1u);
    EXPECT_EQ(doc["owners"][0]["logins"][0].s, "q\"u\\o\xc3\xbf" "te") << "\\xff is written as \\u00ff";

    CtlResult text = run({"owners", "list", "@example.com"});
    EXPECT_EQ(text.code, 0);
    EXPECT_NE(text.out.find("q\"u\\x5co\\xffte"), std::string::npos) << "got=" << text.out;
}

} // namespace
