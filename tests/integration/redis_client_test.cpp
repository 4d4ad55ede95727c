// SPDX-License-Identifier: MIT
// redis_client_test.cpp - the RESP codec (no sockets), then relayguard::redis::Client against a
// real redis-server (UNIX, TCP, TLS) and against fake servers on loopback that misbehave.
//
// Every wait is bounded; the timing assertions are loose enough for a loaded 2-core machine
// and tight enough to tell "at once" from "after command_timeout".
#include <relayguard/redis.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "redis/resp_codec.hpp"
#include "testing/redis_server.hpp"

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using relayguard::redis::Client;
using relayguard::redis::ClientConfig;
using relayguard::redis::errc;
using relayguard::redis::Reply;
using relayguard::redis::Script;
using relayguard::redis::detail::ReplyReader;
using relayguard::testing::RedisServer;
using Clock = std::chrono::steady_clock;
using Result = boost::system::result<Reply, std::error_code>;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// ---------------------------------------------------------------------------------------------
// Helpers

Reply str(Reply::Type type, std::string s)
{
    Reply r;
    r.type = type;
    r.str = std::move(s);
    return r;
}
Reply bulk(std::string s) { return str(Reply::Type::string, std::move(s)); }
Reply status(std::string s) { return str(Reply::Type::status, std::move(s)); }
Reply error(std::string s) { return str(Reply::Type::error, std::move(s)); }
Reply integer(long long v)
{
    Reply r;
    r.type = Reply::Type::integer;
    r.integer = v;
    return r;
}
Reply nil() { return Reply{}; }
Reply array(std::vector<Reply> elements)
{
    Reply r;
    r.type = Reply::Type::array;
    r.elements = std::move(elements);
    return r;
}

// show - a reply as text for got=/want= messages.
std::string show(const Reply& r)
{
    switch (r.type) {
    case Reply::Type::string: return fmt::format("\"{}\"", r.str);
    case Reply::Type::status: return fmt::format("+{}", r.str);
    case Reply::Type::error: return fmt::format("-{}", r.str);
    case Reply::Type::integer: return fmt::format(":{}", r.integer);
    case Reply::Type::nil: return "nil";
    case Reply::Type::array: {
        std::string out = "[";
        for (std::size_t i = 0; i < r.elements.size(); ++i) out += (i ? ", " : "") + show(r.elements[i]);
        return out + "]";
    }
    }
    return "?";
}
std::string show(const Result& r) { return r ? show(*r) : "error " + r.error().message(); }

bool same(const Reply& a, const Reply& b)
{
    if (a.type != b.type) return false;
    switch (a.type) {
    case Reply::Type::integer: return a.integer == b.integer;
    case Reply::Type::nil: return true;
    case Reply::Type::array:
        if (a.elements.size() != b.elements.size()) return false;
        for (std::size_t i = 0; i < a.elements.size(); ++i)
            if (!same(a.elements[i], b.elements[i])) return false;
        return true;
    default: return a.str == b.str;
    }
}

// run - run a test coroutine on a fresh io_context; fails the test if it is not done in time.
// Exceptions thrown in the coroutine (see must()) fail the test with their message.
void run(std::function<asio::awaitable<void>(asio::any_io_executor)> body, std::chrono::milliseconds limit = 10s)
{
    asio::io_context io;
    bool done = false;
    std::exception_ptr failure;
    asio::co_spawn(io, body(io.get_executor()), [&](std::exception_ptr e) {
        done = true;
        failure = e;
        io.stop();
    });
    io.run_for(limit);
    if (failure) std::rethrow_exception(failure);
    ASSERT_TRUE(done) << "test coroutine still running after " << limit.count() << " ms";
}

// call - Client::command with its arguments spelled out. GCC 12 rejects a braced list inside a
// co_await expression ("array used as initializer"), so callers name their vector first.
template <typename... Args>
asio::awaitable<Result> call(Client& client, Args... args)
{
    std::vector<std::string_view> argv{std::string_view(args)...};
    co_return co_await client.command(std::move(argv));
}

// must - a command that has to succeed at the transport level; throws (failing the test) if not.
asio::awaitable<Reply> must_argv(Client& client, std::vector<std::string_view> argv)
{
    auto r = co_await client.command(argv);
    if (!r) {
        std::string cmd;
        for (auto a : argv) cmd += std::string(a) + " ";
        throw std::runtime_error(fmt::format("{}: got=error {} want=a reply", cmd, r.error().message()));
    }
    co_return std::move(*r);
}

template <typename... Args>
asio::awaitable<Reply> must(Client& client, Args... args)
{
    std::vector<std::string_view> argv{std::string_view(args)...};
    co_return co_await must_argv(client, std::move(argv));
}

asio::awaitable<void> pause(std::chrono::milliseconds d)
{
    asio::steady_timer t(co_await asio::this_coro::executor, d);
    co_await t.async_wait(use_tuple);
}

// wait_until - poll `ready` every 5 ms, for at most `limit`; its last value.
asio::awaitable<bool> wait_until(std::function<bool()> ready, std::chrono::milliseconds limit)
{
    const auto deadline = Clock::now() + limit;
    while (!ready()) {
        if (Clock::now() >= deadline) co_return false;
        co_await pause(5ms);
    }
    co_return true;
}

long long ms_since(Clock::time_point t0)
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
}

// info_field - "name:value" from an INFO reply; "" if absent.
std::string info_field(const Reply& info, std::string_view name)
{
    std::istringstream in(info.str);
    for (std::string line; std::getline(in, line);) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.size() > name.size() && line.starts_with(name) && line[name.size()] == ':')
            return line.substr(name.size() + 1);
    }
    return {};
}

// LogCapture - spdlog's default logger writes into a string while this lives.
class LogCapture {
public:
    LogCapture() : previous_(spdlog::default_logger())
    {
        auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
        auto logger = std::make_shared<spdlog::logger>("test", std::move(sink));
        logger->set_pattern("%l: %v");
        logger->set_level(spdlog::level::info);
        spdlog::set_default_logger(std::move(logger));
    }
    ~LogCapture() { spdlog::set_default_logger(previous_); }
    std::string text() const { return out_.str(); }
    std::size_t count(std::string_view needle) const
    {
        const std::string t = text();
        std::size_t n = 0;
        for (auto pos = t.find(needle); pos != std::string::npos; pos = t.find(needle, pos + 1)) ++n;
        return n;
    }

private:
    std::ostringstream out_;
    std::shared_ptr<spdlog::logger> previous_;
};

ClientConfig unix_config(const RedisServer& server)
{
    ClientConfig c;
    c.address = "unix:" + server.unix_path();
    c.command_timeout = 1000ms;
    c.reconnect_min = 20ms;
    c.reconnect_max = 100ms;
    return c;
}

// connected_client - a started client that is connected (throws if not within 2 s).
asio::awaitable<std::unique_ptr<Client>> connected_client(ClientConfig config)
{
    auto client = std::make_unique<Client>(co_await asio::this_coro::executor, config);
    client->start();
    if (!co_await wait_until([&] { return client->connected(); }, 2000ms))
        throw std::runtime_error("client for " + config.address + " did not connect within 2 s");
    co_return client;
}

// FakeServer - a loopback TCP "Redis" that answers the connect-time PING with +PONG and every
// later read with `reply` (nothing if empty). Its state is shared with its coroutines, so it
// may be destroyed while they are still parked in the io_context.
class FakeServer {
public:
    FakeServer(asio::any_io_executor ex, std::string reply, bool answer_ping = true) : s_(std::make_shared<State>(ex))
    {
        s_->reply = std::move(reply);
        s_->answer_ping = answer_ping;
        asio::co_spawn(ex, accept_loop(s_), asio::detached);
    }
    ~FakeServer()
    {
        boost::system::error_code ignored;
        s_->acceptor.close(ignored);
        for (auto& sock : s_->sockets) sock->close(ignored);
    }
    std::string address() const { return fmt::format("tcp:127.0.0.1:{}", s_->acceptor.local_endpoint().port()); }
    int accepted() const { return s_->accepted; }

private:
    using tcp = asio::ip::tcp;
    struct State {
        explicit State(asio::any_io_executor ex) : acceptor(ex, tcp::endpoint(asio::ip::address_v4::loopback(), 0)) {}
        tcp::acceptor acceptor;
        std::vector<std::shared_ptr<tcp::socket>> sockets;
        std::string reply;
        bool answer_ping = true;
        int accepted = 0;
    };

    static asio::awaitable<void> accept_loop(std::shared_ptr<State> s)
    {
        for (;;) {
            auto [ec, sock] = co_await s->acceptor.async_accept(use_tuple);
            if (ec) co_return;
            ++s->accepted;
            auto p = std::make_shared<tcp::socket>(std::move(sock));
            s->sockets.push_back(p);
            asio::co_spawn(s->acceptor.get_executor(), session(s, p), asio::detached);
        }
    }

    static asio::awaitable<void> session(std::shared_ptr<State> s, std::shared_ptr<tcp::socket> sock)
    {
        char buf[4096];
        for (bool first = true;; first = false) {
            auto [ec, n] = co_await sock->async_read_some(asio::buffer(buf), use_tuple);
            if (ec) co_return;
            const std::string out = first && s->answer_ping ? std::string("+PONG\r\n") : s->reply;
            if (out.empty()) continue;
            auto [wec, m] = co_await asio::async_write(*sock, asio::buffer(out), use_tuple);
            if (wec) co_return;
        }
    }

    std::shared_ptr<State> s_;
};

// ---------------------------------------------------------------------------------------------
// RESP codec (hiredis underneath), no sockets

TEST(RespCodec, EncodesCommandsBinarySafe)
{
    std::string out;
    const std::string value("a\r\nb\0c", 6);
    std::vector<std::string_view> args = {"SET", "k", value, ""};
    relayguard::redis::detail::append_command(out, args);
    const std::string want("*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$6\r\na\r\nb\0c\r\n$0\r\n\r\n", 38);
    EXPECT_EQ(out, want) << "got=" << out.size() << " bytes want=" << want.size();
}

TEST(RespCodec, EncodesExactlyAsHiredisFormatCommandArgv)
{
    // append_command is our own writer; hiredis' formatter is the reference it replaced.
    const std::string binary("\0\r\n$*", 5);
    const std::string long_arg(100'000, 'x');
    const std::vector<std::vector<std::string_view>> commands = {
        {"PING"},
        {"GET", ""},
        {"SET", "k", binary},
        {"EVALSHA", "0123456789abcdef0123456789abcdef01234567", "3", "a{b}", "c", "d", long_arg},
        std::vector<std::string_view>(1000, "SADD"),
    };
    for (const auto& args : commands) {
        std::vector<const char*> argv;
        std::vector<std::size_t> lens;
        for (const auto a : args) {
            argv.push_back(a.data());
            lens.push_back(a.size());
        }
        char* raw = nullptr;
        const int len = redisFormatCommandArgv(&raw, static_cast<int>(args.size()), argv.data(), lens.data());
        ASSERT_GT(len, 0);
        const std::string want(raw, static_cast<std::size_t>(len));
        redisFreeCommand(raw);
        std::string got = "prefix";
        relayguard::redis::detail::append_command(got, args);
        EXPECT_EQ(got, "prefix" + want) << args.size() << " arguments, first " << args[0];
    }
}

struct DecodeCase {
    const char* name;
    std::string wire;
    Reply want;
};

std::vector<DecodeCase> decode_cases()
{
    return {
        {"status", "+OK\r\n", status("OK")},
        {"error", "-ERR wrong type\r\n", error("ERR wrong type")},
        {"integer", ":-42\r\n", integer(-42)},
        {"bulk", "$5\r\nhello\r\n", bulk("hello")},
        {"bulk_binary", std::string("$4\r\na\r\0b\r\n", 10), bulk(std::string("a\r\0b", 4))},
        {"bulk_empty", "$0\r\n\r\n", bulk("")},
        {"nil_bulk", "$-1\r\n", nil()},
        {"nil_array", "*-1\r\n", nil()},
        {"empty_array", "*0\r\n", array({})},
        {"nested", "*3\r\n:1\r\n*2\r\n$1\r\na\r\n$-1\r\n+x\r\n",
         array({integer(1), array({bulk("a"), nil()}), status("x")})},
    };
}

TEST(RespCodec, DecodesEveryReplyTypeSplitAtEveryByte)
{
    for (const auto& tc : decode_cases()) {
        for (std::size_t split = 0; split <= tc.wire.size(); ++split) {
            ReplyReader reader;
            Reply got;
            ASSERT_TRUE(reader.feed(tc.wire.data(), split));
            auto status = reader.next(got);
            if (split < tc.wire.size()) {
                EXPECT_EQ(status, ReplyReader::Status::need_more) << tc.name << " split=" << split;
                ASSERT_TRUE(reader.feed(tc.wire.data() + split, tc.wire.size() - split));
                status = reader.next(got);
            }
            ASSERT_EQ(status, ReplyReader::Status::reply) << tc.name << " split=" << split << " " << reader.error();
            EXPECT_TRUE(same(got, tc.want)) << tc.name << " split=" << split << " got=" << show(got)
                                            << " want=" << show(tc.want);
            EXPECT_EQ(reader.next(got), ReplyReader::Status::need_more) << tc.name;
        }
    }
}

TEST(RespCodec, DecodesPipelinedRepliesInOrder)
{
    std::string wire;
    for (const auto& tc : decode_cases()) wire += tc.wire;
    ReplyReader reader;
    ASSERT_TRUE(reader.feed(wire.data(), wire.size()));
    for (const auto& tc : decode_cases()) {
        Reply got;
        ASSERT_EQ(reader.next(got), ReplyReader::Status::reply) << tc.name;
        EXPECT_TRUE(same(got, tc.want)) << tc.name << " got=" << show(got) << " want=" << show(tc.want);
    }
    Reply extra;
    EXPECT_EQ(reader.next(extra), ReplyReader::Status::need_more);
}

struct LimitCase {
    const char* name;
    std::string wire;
    ReplyReader::Limits limits;
    ReplyReader::Status want;
};

TEST(RespCodec, EnforcesElementByteAndDepthLimits)
{
    const ReplyReader::Limits four{4, 1000};
    const ReplyReader::Limits ten_bytes{1000, 10};
    const std::vector<LimitCase> cases = {
        {"array_at_limit", "*4\r\n", four, ReplyReader::Status::need_more},
        {"array_over_limit", "*5\r\n", four, ReplyReader::Status::error},
        {"nested_sum_at_limit", "*2\r\n*1\r\n:1\r\n*1\r\n:2\r\n", four, ReplyReader::Status::reply},
        {"nested_sum_over_limit", "*2\r\n*2\r\n:1\r\n:2\r\n*1\r\n", four, ReplyReader::Status::error},
        {"default_at_limit", fmt::format("*{}\r\n", relayguard::redis::max_reply_elements), {},
         ReplyReader::Status::need_more},
        {"default_over_limit", fmt::format("*{}\r\n", relayguard::redis::max_reply_elements + 1), {},
         ReplyReader::Status::error},
        {"bulk_at_limit", "$10\r\n0123456789\r\n", ten_bytes, ReplyReader::Status::reply},
        {"bulk_over_limit", "$11\r\n0123456789a\r\n", ten_bytes, ReplyReader::Status::error},
        {"strings_summed", "*2\r\n$6\r\nabcdef\r\n$6\r\nabcdef\r\n", ten_bytes, ReplyReader::Status::error},
        // A long bulk string is refused while it is still arriving, not after it is all in memory.
        {"bulk_still_arriving", "$100000\r\n" + std::string(200, 'x'), ten_bytes, ReplyReader::Status::error},
        // hiredis: "nested multi bulk replies with depth > 7" (below the root) are refused.
        {"depth_7", "*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", {}, ReplyReader::Status::reply},
        {"depth_8", "*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", {},
         ReplyReader::Status::error},
        {"not_resp", "hello\r\n", {}, ReplyReader::Status::error},
    };
    for (const auto& tc : cases) {
        ReplyReader reader(tc.limits);
        reader.feed(tc.wire.data(), tc.wire.size());
        Reply got;
        const auto status = reader.next(got);
        EXPECT_EQ(status, tc.want) << tc.name << ": got=" << static_cast<int>(status)
                                   << " want=" << static_cast<int>(tc.want) << " error=" << reader.error();
        if (tc.want == ReplyReader::Status::error) {
            EXPECT_FALSE(reader.error().empty()) << tc.name;
        }
    }
}

TEST(RespCodec, ErrorIsSticky)
{
    ReplyReader reader;
    reader.feed("?\r\n", 3);
    Reply got;
    ASSERT_EQ(reader.next(got), ReplyReader::Status::error);
    EXPECT_FALSE(reader.feed("+OK\r\n", 5)) << "got=accepted more input after an error want=refused";
    EXPECT_EQ(reader.next(got), ReplyReader::Status::error);
}

// ---------------------------------------------------------------------------------------------
// Client: configuration and life cycle without a server

TEST(RedisClient, ParsesAddresses)
{
    asio::io_context io;
    const std::vector<std::string> good = {"unix:/run/redis.sock", "tcp:127.0.0.1:6379", "127.0.0.1:6379",
                                           "tls:redis.example:6380", "tcp:[::1]:6379", "tls:[2001:db8::1]:1"};
    const std::vector<std::string> bad = {"unix:", "tcp:host", "tcp::6379", "tcp:host:0", "tcp:host:65536",
                                          "::1:6379", "tcp:[::1]6379", "host:port", "tls:host:-1", ""};
    for (const auto& a : good) {
        ClientConfig c;
        c.address = a;
        EXPECT_NO_THROW(Client(io.get_executor(), c)) << a;
    }
    for (const auto& a : bad) {
        ClientConfig c;
        c.address = a;
        EXPECT_THROW(Client(io.get_executor(), c), std::invalid_argument) << "address=\"" << a << "\"";
    }
}

TEST(RedisClient, ScriptSha1MatchesRedis)
{
    RedisServer server;
    run([&](asio::any_io_executor) -> asio::awaitable<void> {
        auto client = co_await connected_client(unix_config(server));
        for (const char* body : {"return 1", "", "return {KEYS[1], ARGV[1]}"}) {
            const Script script(body);
            const Reply loaded = co_await must(*client, "SCRIPT", "LOAD", body);
            EXPECT_EQ(script.sha1(), loaded.str) << "body=\"" << body << "\"";
        }
    });
}

TEST(RedisClient, FailsAtOnceBeforeStartAndAfterClose)
{
    RedisServer server;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        Client idle(ex, unix_config(server));
        auto r = co_await call(idle, "PING");
        EXPECT_EQ(r.error(), make_error_code(errc::not_connected)) << "before start: got=" << show(r);

        auto client = co_await connected_client(unix_config(server));
        client->close();
        EXPECT_FALSE(client->connected());
        r = co_await call(*client, "PING");
        EXPECT_EQ(r.error(), make_error_code(errc::shutting_down)) << "after close: got=" << show(r);
    });
}

// ---------------------------------------------------------------------------------------------
// Client against a real redis-server, over every transport

struct Transport {
    const char* name;
    std::function<ClientConfig(const RedisServer&)> config;
    RedisServer::Options options;
};

std::vector<Transport> transports()
{
    RedisServer::Options tcp;
    tcp.tcp = true;
    RedisServer::Options tls;
    tls.tls = true;
    RedisServer::Options mutual = tls;
    mutual.tls_client_certs = true;
    return {
        {"unix", [](const RedisServer& s) { return unix_config(s); }, {}},
        {"tcp",
         [](const RedisServer& s) {
             auto c = unix_config(s);
             c.address = fmt::format("tcp:127.0.0.1:{}", s.tcp_port());
             return c;
         },
         tcp},
        {"tls_ip",
         [](const RedisServer& s) {
             auto c = unix_config(s);
             c.address = fmt::format("tls:127.0.0.1:{}", s.tls_port());
             c.tls_ca_file = s.ca_file();
             return c;
         },
         tls},
        {"tls_name",
         [](const RedisServer& s) {
             auto c = unix_config(s);
             c.address = fmt::format("tls:localhost:{}", s.tls_port());
             c.tls_ca_file = s.ca_file();
             return c;
         },
         tls},
        {"tls_client_cert",
         [](const RedisServer& s) {
             auto c = unix_config(s);
             c.address = fmt::format("tls:127.0.0.1:{}", s.tls_port());
             c.tls_ca_file = s.ca_file();
             c.tls_cert_file = s.client_cert_file();
             c.tls_key_file = s.client_key_file();
             return c;
         },
         mutual},
    };
}

class RedisTransport : public ::testing::TestWithParam<Transport> {};

TEST_P(RedisTransport, RoundTripsEveryReplyType)
{
    RedisServer server(GetParam().options);
    const ClientConfig config = GetParam().config(server);
    run([&](asio::any_io_executor) -> asio::awaitable<void> {
        auto client = co_await connected_client(config);
        const std::string binary("v\r\n\0x", 5);
        struct Step {
            std::vector<std::string_view> args;
            Reply want;
        };
        const std::vector<Step> steps = {
            {{"PING"}, status("PONG")},
            {{"SET", "k", binary}, status("OK")},
            {{"GET", "k"}, bulk(binary)},
            {{"GET", "missing"}, nil()},
            {{"INCR", "n"}, integer(1)},
            {{"INCRBY", "n", "41"}, integer(42)},
            {{"RPUSH", "l", "a", "b", ""}, integer(3)},
            {{"LRANGE", "l", "0", "-1"}, array({bulk("a"), bulk("b"), bulk("")})},
            {{"LRANGE", "missing", "0", "-1"}, array({})},
            {{"LPOP", "k"}, error("WRONGTYPE Operation against a key holding the wrong kind of value")},
        };
        for (const auto& step : steps) {
            const Reply got = co_await must_argv(*client, step.args);
            EXPECT_TRUE(same(got, step.want)) << step.args[0] << ": got=" << show(got) << " want=" << show(step.want);
        }
    });
}

INSTANTIATE_TEST_SUITE_P(Transports, RedisTransport, ::testing::ValuesIn(transports()),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(RedisClient, TlsRefusesServerWithOtherName)
{
    RedisServer::Options options;
    options.tls = true;
    RedisServer server(options);
    LogCapture log;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        auto config = unix_config(server);
        config.address = fmt::format("tls:127.0.0.1:{}", server.tls_port());
        config.tls_ca_file = server.ca_file();
        config.tls_server_name = "redis.invalid";
        Client client(ex, config);
        client.start();
        EXPECT_TRUE(co_await wait_until([&] { return log.count("cannot connect") > 0; }, 2000ms)) << log.text();
        EXPECT_FALSE(client.connected());
        EXPECT_NE(log.text().find("TLS handshake: certificate verify failed"), std::string::npos) << log.text();
        auto r = co_await call(client, "PING");
        EXPECT_EQ(r.error(), make_error_code(errc::not_connected)) << "got=" << show(r);
    });
}

TEST(RedisClient, TlsWithoutRequiredClientCertificateStaysDown)
{
    RedisServer::Options options;
    options.tls = true;
    options.tls_client_certs = true;
    RedisServer server(options);
    LogCapture log;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        auto config = unix_config(server);
        config.address = fmt::format("tls:127.0.0.1:{}", server.tls_port());
        config.tls_ca_file = server.ca_file();
        Client client(ex, config);
        client.start();
        EXPECT_TRUE(co_await wait_until([&] { return log.count("cannot connect") > 0; }, 2000ms)) << log.text();
        EXPECT_FALSE(client.connected());
        EXPECT_EQ(log.count(": connected"), 0u) << log.text();
    });
}

TEST(RedisClient, AuthenticatesWithPasswordOrAclUser)
{
    RedisServer::Options options;
    options.requirepass = "default-secret";
    options.acl_user = "relay";
    options.acl_password = "relay-secret";
    RedisServer server(options);
    run([&](asio::any_io_executor) -> asio::awaitable<void> {
        auto config = unix_config(server);
        config.password = "default-secret";
        auto by_password = co_await connected_client(config);
        EXPECT_EQ((co_await must(*by_password, "ACL", "WHOAMI")).str, "default");

        config.username = "relay";
        config.password = "relay-secret";
        auto by_user = co_await connected_client(config);
        EXPECT_EQ((co_await must(*by_user, "ACL", "WHOAMI")).str, "relay");
    });
}

TEST(RedisClient, WrongPasswordStaysDownAndLogsOnce)
{
    RedisServer::Options options;
    options.requirepass = "right";
    RedisServer server(options);
    LogCapture log;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        auto good_config = unix_config(server);
        good_config.password = "right";
        auto observer = co_await connected_client(good_config);

        auto config = unix_config(server);
        config.password = "wrong-password-123";
        config.reconnect_min = 5ms;
        config.reconnect_max = 10ms;
        Client client(ex, config);
        client.start();
        // Let several attempts fail (the server counts connections; one is the observer's), then
        // look at the log.
        long long attempts = 0;
        const auto deadline = Clock::now() + 3s;
        while (attempts < 4 && Clock::now() < deadline) {
            const Reply info = co_await must(*observer, "INFO", "stats");
            attempts = std::atoll(info_field(info, "total_connections_received").c_str()) - 1;
            co_await pause(10ms);
        }
        EXPECT_GE(attempts, 4) << "got=" << attempts << " attempts want=at least 4";
        EXPECT_FALSE(client.connected());
        auto r = co_await call(client, "PING");
        EXPECT_EQ(r.error(), make_error_code(errc::not_connected)) << "got=" << show(r);
        EXPECT_EQ(log.count("cannot connect: AUTH failed: WRONGPASS"), 1u) << log.text();
        EXPECT_EQ(log.text().find("wrong-password-123"), std::string::npos) << "password logged: " << log.text();
    });
}

TEST(RedisClient, SelectsDatabase)
{
    RedisServer server;
    run([&](asio::any_io_executor) -> asio::awaitable<void> {
        auto config = unix_config(server);
        config.database = 3;
        auto db3 = co_await connected_client(config);
        auto db0 = co_await connected_client(unix_config(server));
        const Reply info = co_await must(*db3, "CLIENT", "INFO");
        EXPECT_NE(info.str.find(" db=3 "), std::string::npos) << "got=" << info.str;
        co_await must(*db3, "SET", "only-in-3", "x");
        EXPECT_EQ((co_await must(*db0, "EXISTS", "only-in-3")).integer, 0);
        EXPECT_EQ((co_await must(*db3, "EXISTS", "only-in-3")).integer, 1);
    });
}

TEST(RedisClient, PipelinesCommandsFromManyCoroutinesInOrder)
{
    constexpr int coroutines = 100;
    constexpr int per_coroutine = 10;
    RedisServer server;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        auto client = co_await connected_client(unix_config(server));
        int finished = 0;
        int mismatches = 0;
        std::string first_mismatch;
        for (int i = 0; i < coroutines; ++i) {
            asio::co_spawn(
                ex,
                [&, i]() -> asio::awaitable<void> {
                    const std::string counter = fmt::format("counter:{}", i);
                    for (int j = 0; j < per_coroutine; ++j) {
                        // ECHO checks the reply is ours; INCR checks order within one caller.
                        const std::string payload = fmt::format("{}:{}", i, j);
                        // (No co_await inside ?: - GCC 12 miscompiles that.)
                        Result r;
                        Reply want;
                        if (j % 2 == 0) {
                            r = co_await call(*client, "ECHO", payload);
                            want = bulk(payload);
                        } else {
                            r = co_await call(*client, "INCR", counter);
                            want = integer(j / 2 + 1);
                        }
                        if (!r || !same(*r, want)) {
                            if (mismatches++ == 0)
                                first_mismatch = fmt::format("{}: got={} want={}", payload, show(r), show(want));
                        }
                        ++finished;
                    }
                },
                asio::detached);
        }
        EXPECT_TRUE(co_await wait_until([&] { return finished == coroutines * per_coroutine; }, 5000ms))
            << "finished=" << finished;
        EXPECT_EQ(mismatches, 0) << first_mismatch;
    });
}

TEST(RedisClient, EvalReloadsScriptOnceAfterFlush)
{
    RedisServer server;
    run([&](asio::any_io_executor) -> asio::awaitable<void> {
        auto client = co_await connected_client(unix_config(server));
        const Script script("return {KEYS[1], ARGV[1], #KEYS, #ARGV}");
        const Reply want = array({bulk("key"), bulk("arg"), integer(1), integer(2)});

        const std::vector<std::string> keys = {"key"};
        const std::vector<std::string> args = {"arg", "x"};
        auto first = co_await client->eval(script, keys, args);
        EXPECT_TRUE(first && same(*first, want)) << "got=" << show(first) << " want=" << show(want);

        co_await must(*client, "SCRIPT", "FLUSH");
        co_await must(*client, "CONFIG", "RESETSTAT");
        auto again = co_await client->eval(script, keys, args);
        EXPECT_TRUE(again && same(*again, want)) << "after flush: got=" << show(again) << " want=" << show(want);

        const Reply stats = co_await must(*client, "INFO", "commandstats");
        EXPECT_TRUE(info_field(stats, "cmdstat_eval").starts_with("calls=1,"))
            << "EVAL: got=" << info_field(stats, "cmdstat_eval") << " want=calls=1";
        EXPECT_TRUE(info_field(stats, "cmdstat_evalsha").starts_with("calls=1,"))
            << "EVALSHA: got=" << info_field(stats, "cmdstat_evalsha") << " want=calls=1";
        const Reply exists = co_await must(*client, "SCRIPT", "EXISTS", script.sha1());
        EXPECT_TRUE(same(exists, array({integer(1)}))) << "cached again: got=" << show(exists);
    });
}

TEST(RedisClient, EvalErrorReplyIsServerErrorWithText)
{
    RedisServer server;
    run([&](asio::any_io_executor) -> asio::awaitable<void> {
        auto client = co_await connected_client(unix_config(server));
        const Script script("return redis.error_reply('limits: bad window ' .. ARGV[1])");
        std::string text;
        const std::vector<std::string> no_keys;
        const std::vector<std::string> args = {"7"};
        auto r = co_await client->eval(script, no_keys, args, &text);
        EXPECT_EQ(r.error(), make_error_code(errc::server_error)) << "got=" << show(r);
        EXPECT_EQ(text, "limits: bad window 7");
        EXPECT_TRUE(client->connected());
    });
}

TEST(RedisClient, TimedOutRepliesAreDroppedInOrder)
{
    RedisServer server;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        auto config = unix_config(server);
        config.command_timeout = 50ms;
        auto client = co_await connected_client(config);
        const Reply id_before = co_await must(*client, "CLIENT", "ID");

        // A command stuck behind the sleep, and the sleep itself: both must time out after
        // ~50 ms, not 500. The sleep goes first: `submitted` is set just before its co_await,
        // which queues the command before that coroutine first yields.
        Result slept;
        bool submitted = false;
        bool slept_done = false;
        asio::co_spawn(
            ex,
            [&]() -> asio::awaitable<void> {
                submitted = true;
                slept = co_await call(*client, "DEBUG", "SLEEP", "0.5");
                slept_done = true;
            },
            asio::detached);
        EXPECT_TRUE(co_await wait_until([&] { return submitted; }, 200ms));
        const auto t0 = Clock::now();
        auto early = co_await call(*client, "ECHO", "early");
        const auto waited = ms_since(t0);
        EXPECT_EQ(early.error(), make_error_code(errc::timeout)) << "got=" << show(early);
        EXPECT_LT(waited, 300) << "got=" << waited << " ms want=about 50";
        EXPECT_TRUE(co_await wait_until([&] { return slept_done; }, 200ms));
        EXPECT_EQ(slept.error(), make_error_code(errc::timeout)) << "got=" << show(slept);

        // Probe until Redis is awake again; the first answer must be the probe's own, not a
        // late reply to the abandoned commands.
        Result probe(boost::system::in_place_error, make_error_code(errc::timeout));
        std::string payload;
        for (int i = 0; i < 100 && !probe; ++i) {
            payload = fmt::format("probe-{}", i);
            probe = co_await call(*client, "ECHO", payload);
        }
        EXPECT_TRUE(probe && same(*probe, bulk(payload))) << "got=" << show(probe) << " want=\"" << payload << "\"";
        const Reply id_after = co_await must(*client, "CLIENT", "ID");
        EXPECT_EQ(id_after.integer, id_before.integer) << "the connection was replaced";
    });
}

TEST(RedisClient, KilledServerFailsPendingAtOnceAndReconnectsAfterRestart)
{
    RedisServer server;
    LogCapture log;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        auto config = unix_config(server);
        config.command_timeout = 3000ms;
        config.reconnect_min = 50ms;
        config.reconnect_max = 200ms;
        auto client = co_await connected_client(config);
        auto observer = co_await connected_client(unix_config(server));

        Result blocked;
        bool blocked_done = false;
        asio::co_spawn(
            ex,
            [&]() -> asio::awaitable<void> {
                blocked = co_await call(*client, "BLPOP", "never-pushed", "10");
                blocked_done = true;
            },
            asio::detached);
        const auto deadline = Clock::now() + 2s;
        for (bool in_server = false; !in_server && Clock::now() < deadline; co_await pause(5ms)) {
            const Reply info = co_await must(*observer, "INFO", "clients");
            in_server = info_field(info, "blocked_clients") == "1";
        }
        observer->close(); // only `client` should reconnect below

        server.kill();
        const auto killed = Clock::now();
        EXPECT_TRUE(co_await wait_until([&] { return blocked_done; }, 1000ms));
        EXPECT_EQ(blocked.error(), make_error_code(errc::connection_lost)) << "got=" << show(blocked);
        EXPECT_LT(ms_since(killed), 500) << "pending command failed late";

        const auto t0 = Clock::now();
        auto r = co_await call(*client, "PING");
        const auto waited = ms_since(t0);
        EXPECT_EQ(r.error(), make_error_code(errc::not_connected)) << "got=" << show(r);
        EXPECT_LT(waited, 50) << "got=" << waited << " ms want=at once (command_timeout is 3000 ms)";

        server.restart();
        const auto restarted = Clock::now();
        EXPECT_TRUE(co_await wait_until([&] { return client->connected(); }, 2000ms));
        EXPECT_LT(ms_since(restarted), 1000) << "reconnect took too long";
        const Reply pong = co_await must(*client, "PING");
        EXPECT_TRUE(same(pong, status("PONG"))) << "got=" << show(pong);

        const std::string label = "redis unix:" + server.unix_path();
        EXPECT_EQ(log.count("info: " + label + ": connected"), 3u) << log.text(); // client, observer, again
        EXPECT_EQ(log.count("warning: " + label + ": connection lost: closed by the server; reconnecting"), 1u)
            << log.text();
    });
}

TEST(RedisClient, GarbageFromServerIsProtocolErrorAndReconnects)
{
    LogCapture log;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        FakeServer fake(ex, "hello\r\n");
        ClientConfig config;
        config.address = fake.address();
        config.reconnect_min = 10ms;
        auto client = co_await connected_client(config);
        auto r = co_await call(*client, "GET", "k");
        EXPECT_EQ(r.error(), make_error_code(errc::protocol_error)) << "got=" << show(r);
        EXPECT_TRUE(co_await wait_until([&] { return fake.accepted() >= 2; }, 2000ms)) << "no reconnect";
        EXPECT_EQ(log.count("connection lost: protocol error"), 1u) << log.text();
    });
}

TEST(RedisClient, OversizedArrayIsProtocolError)
{
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        FakeServer fake(ex, fmt::format("*{}\r\n", relayguard::redis::max_reply_elements + 1));
        ClientConfig config;
        config.address = fake.address();
        config.reconnect_min = 10ms;
        auto client = co_await connected_client(config);
        auto r = co_await call(*client, "LRANGE", "l", "0", "-1");
        EXPECT_EQ(r.error(), make_error_code(errc::protocol_error)) << "got=" << show(r);
        EXPECT_TRUE(co_await wait_until([&] { return fake.accepted() >= 2; }, 2000ms)) << "no reconnect";
    });
}

TEST(RedisClient, SilentServerIsDeclaredDeadAndReplaced)
{
    LogCapture log;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        FakeServer fake(ex, ""); // answers the connect PING, then nothing
        ClientConfig config;
        config.address = fake.address();
        config.command_timeout = 50ms;
        config.reconnect_min = 10ms;
        auto client = co_await connected_client(config);
        const auto t0 = Clock::now();
        auto r = co_await call(*client, "GET", "k");
        EXPECT_EQ(r.error(), make_error_code(errc::timeout)) << "got=" << show(r);
        EXPECT_LT(ms_since(t0), 300);
        // Dead after max(4 x 50 ms, 1 s) without the abandoned reply; then a new connection.
        EXPECT_TRUE(co_await wait_until([&] { return fake.accepted() >= 2; }, 3000ms)) << "no reconnect";
        EXPECT_GE(ms_since(t0), 900);
        EXPECT_EQ(log.count("connection lost: no reply for 1000 ms; reconnecting"), 1u) << log.text();
    });
}

TEST(RedisClient, ConnectTimeoutBoundsTlsHandshake)
{
    LogCapture log;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        FakeServer fake(ex, "", false); // accepts TCP, never speaks TLS
        ClientConfig config;
        config.address = "tls:127.0.0.1:" + fake.address().substr(fake.address().rfind(':') + 1);
        config.connect_timeout = 100ms;
        config.reconnect_min = 10ms;
        config.tls_verify = false;
        Client client(ex, config);
        client.start();
        const auto t0 = Clock::now();
        EXPECT_TRUE(co_await wait_until([&] { return log.count("cannot connect") > 0; }, 2000ms)) << log.text();
        EXPECT_LT(ms_since(t0), 1000);
        EXPECT_EQ(log.count("cannot connect: timed out after 100 ms (TLS handshake)"), 1u) << log.text();
        EXPECT_FALSE(client.connected());
    });
}

TEST(RedisClient, CloseFailsPendingAndDestroyingClientIsSafe)
{
    RedisServer server;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        auto client = co_await connected_client(unix_config(server));
        auto observer = co_await connected_client(unix_config(server));
        std::vector<Result> results(3);
        int done = 0;
        for (auto& slot : results) {
            asio::co_spawn(
                ex,
                [&]() -> asio::awaitable<void> {
                    slot = co_await call(*client, "BLPOP", "never-pushed", "10");
                    ++done;
                },
                asio::detached);
        }
        const auto deadline = Clock::now() + 2s;
        for (bool in_server = false; !in_server && Clock::now() < deadline; co_await pause(5ms)) {
            const Reply info = co_await must(*observer, "INFO", "clients");
            // One blocked connection: Redis reads nothing more from it until the first BLPOP ends.
            in_server = info_field(info, "blocked_clients") == "1";
        }
        client.reset(); // ~Client closes; the loops still hold the shared state
        EXPECT_TRUE(co_await wait_until([&] { return done == 3; }, 1000ms));
        for (const auto& r : results)
            EXPECT_EQ(r.error(), make_error_code(errc::shutting_down)) << "got=" << show(r);
    });
}

} // namespace
