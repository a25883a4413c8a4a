// Webhooks against a real HTTP server on 127.0.0.1 (a small POSIX-socket server in this file): payload
// shapes, attachments, level filtering, failures that must only be logged, a slow server that must
// not block the caller, and config errors.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "notify/webhook.h"
#include "st/error.h"
#include "st/log.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace st::host::notify;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

struct Request {
    std::string method;
    std::string path;
    std::map<std::string, std::string> headers;  // lower-case names
    std::string body;
};

// One connection at a time: read the request (headers + Content-Length body), record it, wait
// `delay`, answer `status` and close.
class TestServer {
  public:
    explicit TestServer(int status = 200, std::chrono::milliseconds delay = 0ms)
        : status_(status), delay_(delay) {
        fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        addr.sin_port = 0;
        EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
        EXPECT_EQ(::listen(fd_, 16), 0);
        socklen_t len = sizeof(addr);
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
        port_ = ntohs(addr.sin_port);
        thread_ = std::thread([this] { loop(); });
    }
    ~TestServer() {
        stop_ = true;
        thread_.join();
        ::close(fd_);
    }
    std::string url(const std::string& path = "/hook") const {
        return "http://127.0.0.1:" + std::to_string(port_) + path;
    }
    std::vector<Request> requests() {
        std::lock_guard<std::mutex> lk(mutex_);
        return requests_;
    }
    bool wait_for(size_t n, std::chrono::milliseconds timeout) {
        std::unique_lock<std::mutex> lk(mutex_);
        return cv_.wait_for(lk, timeout, [&] { return requests_.size() >= n; });
    }

  private:
    void loop() {
        while (!stop_) {
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, 20) <= 0) continue;
            int c = ::accept(fd_, nullptr, nullptr);
            if (c < 0) continue;
            handle(c);
            ::close(c);
        }
    }
    void handle(int c) {
        std::string data;
        char buf[65536];
        size_t header_end = std::string::npos;
        size_t want = 0;
        while (true) {
            pollfd p{c, POLLIN, 0};
            if (::poll(&p, 1, 2000) <= 0) return;
            ssize_t n = ::recv(c, buf, sizeof(buf), 0);
            if (n <= 0) return;
            data.append(buf, static_cast<size_t>(n));
            if (header_end == std::string::npos) {
                header_end = data.find("\r\n\r\n");
                if (header_end == std::string::npos) continue;
                Request r;
                std::istringstream head(data.substr(0, header_end));
                std::string line;
                std::getline(head, line);
                std::istringstream first(line);
                first >> r.method >> r.path;
                while (std::getline(head, line)) {
                    if (!line.empty() && line.back() == '\r') line.pop_back();
                    auto colon = line.find(':');
                    if (colon == std::string::npos) continue;
                    std::string name = line.substr(0, colon);
                    for (auto& ch : name)
                        ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
                    r.headers[name] = line.substr(line.find_first_not_of(' ', colon + 1));
                }
                want = r.headers.count("content-length") ? std::stoul(r.headers["content-length"]) : 0;
                pending_ = std::move(r);
            }
            if (data.size() >= header_end + 4 + want) break;
        }
        pending_.body = data.substr(header_end + 4, want);
        {
            std::lock_guard<std::mutex> lk(mutex_);
            requests_.push_back(pending_);
        }
        cv_.notify_all();
        for (auto until = Clock::now() + delay_; Clock::now() < until && !stop_;)
            std::this_thread::sleep_for(5ms);
        std::string reply = "HTTP/1.1 " + std::to_string(status_) +
                            " X\r\nContent-Length: 9\r\nConnection: close\r\n\r\nsome body";
        ::send(c, reply.data(), reply.size(), MSG_NOSIGNAL);
    }

    int status_;
    std::chrono::milliseconds delay_;
    int fd_ = -1;
    int port_ = 0;
    std::atomic<bool> stop_{false};
    std::thread thread_;
    std::mutex mutex_;
    std::condition_variable cv_;
    std::vector<Request> requests_;
    Request pending_;
};

std::string base64_decode(const std::string& in) {
    static const std::string kTable = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    uint32_t acc = 0;
    int bits = 0;
    for (char ch : in) {
        if (ch == '=') break;
        auto v = kTable.find(ch);
        if (v == std::string::npos) return "<invalid base64>";
        acc = (acc << 6) | static_cast<uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out += static_cast<char>((acc >> bits) & 0xFF);
        }
    }
    return out;
}

WebhookTarget target(WebhookType type, const std::string& url, Severity level = Severity::info,
                     const std::string& prefix = "") {
    WebhookTarget t;
    t.type = type;
    t.url = url;
    t.log_level = level;
    t.message_prefix = prefix;
    return t;
}

std::string error_of(const json& value, const fs::path& dir = fs::temp_directory_path()) {
    try {
        parse_webhook_config(value, dir);
    } catch (const st::Error& e) {
        return e.what();
    }
    return "<no error>";
}

class WebhookTest : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("st_webhook_test_" + std::to_string(::getpid()));
        fs::remove_all(dir_);
        fs::create_directories(dir_);
        log_ = dir_ / "log.txt";
        st::log::set_file(log_.string());
    }
    void TearDown() override {
        st::log::set_file("");
        fs::remove_all(dir_);
    }
    std::string log_text() const {
        std::ifstream f(log_);
        return std::string(std::istreambuf_iterator<char>(f), {});
    }
    // A file with recognisable binary contents (NUL and high bytes included).
    fs::path make_file(const std::string& name, size_t size) {
        std::string bytes;
        for (size_t i = 0; i < size; ++i) bytes += static_cast<char>((i * 37 + name.size()) & 0xFF);
        auto p = dir_ / name;
        std::ofstream(p, std::ios::binary) << bytes;
        return p;
    }
    static std::string contents(const fs::path& p) {
        std::ifstream f(p, std::ios::binary);
        return std::string(std::istreambuf_iterator<char>(f), {});
    }
    fs::path dir_;
    fs::path log_;
};

}  // namespace

TEST(WebhookConfigTest, AcceptsObjectListJsonStringAndFile) {
    auto one = parse_webhook_config(
        json{{"webhook_type", "discord"}, {"webhook_url", "https://discord.com/api/webhooks/1/tok"}}, {});
    ASSERT_EQ(one.size(), 1u);
    EXPECT_EQ(one[0].type, WebhookType::discord);
    EXPECT_EQ(one[0].url, "https://discord.com/api/webhooks/1/tok");
    EXPECT_EQ(one[0].log_level, Severity::info);
    EXPECT_FALSE(one[0].ssl_no_verify);

    json list = json::array(
        {{{"webhook_type", "raw"},
          {"callback_url", "http://127.0.0.1:9/cb"},
          {"log_level", "warning"},
          {"message_prefix", "run-a"},
          {"ssl_no_verify", true}},
         {{"webhook_type", "discord"}, {"webhook_url", "https://x/y"}, {"log_level", "CRITICAL"}}});
    auto two = parse_webhook_config(list, {});
    ASSERT_EQ(two.size(), 2u);
    EXPECT_EQ(two[0].type, WebhookType::raw);
    EXPECT_EQ(two[0].url, "http://127.0.0.1:9/cb");
    EXPECT_EQ(two[0].log_level, Severity::warning);
    EXPECT_EQ(two[0].message_prefix, "run-a");
    EXPECT_TRUE(two[0].ssl_no_verify);
    EXPECT_EQ(two[1].log_level, Severity::critical);

    // A JSON string (as passed on the command line) and a file relative to the config directory.
    EXPECT_EQ(parse_webhook_config(json(list.dump()), {}).size(), 2u);
    auto dir = fs::temp_directory_path() / ("st_webhook_cfg_" + std::to_string(::getpid()));
    fs::create_directories(dir / "sub");
    std::ofstream(dir / "sub" / "hooks.json") << list.dump();
    auto from_file = parse_webhook_config(json("sub/hooks.json"), dir);
    ASSERT_EQ(from_file.size(), 2u);
    EXPECT_EQ(from_file[1].url, "https://x/y");
    EXPECT_EQ(parse_webhook_config(json((dir / "sub" / "hooks.json").string()), "/nonexistent").size(), 2u);
    fs::remove_all(dir);
    EXPECT_TRUE(parse_webhook_config(nullptr, {}).empty());
}

TEST(WebhookConfigTest, BadConfigsNameTheKey) {
    auto has = [](const std::string& text, const std::string& part) {
        EXPECT_NE(text.find(part), std::string::npos) << "expected '" << part << "' in: " << text;
    };
    json good = {{"webhook_type", "raw"}, {"callback_url", "http://h/cb"}};
    std::string e = error_of(json::array({good, {{"webhook_type", "slack"}, {"webhook_url", "http://h"}}}));
    has(e, "webhook_config[1].webhook_type");
    has(e, "'slack'");
    has(e, "discord, raw");
    has(error_of({{"webhook_url", "http://h"}}), "missing 'webhook_type'");
    e = error_of({{"webhook_type", "discord"}, {"callback_url", "http://h"}});
    has(e, "webhook_config");
    has(e, "'webhook_url'");
    has(error_of({{"webhook_type", "raw"}, {"webhook_url", "http://h"}}), "'callback_url'");
    has(error_of({{"webhook_type", "raw"}, {"callback_url", ""}}), "webhook_config.callback_url");
    has(error_of({{"webhook_type", "raw"}, {"callback_url", "ftp://h/x"}}), "http:// or https://");
    e = error_of({{"webhook_type", "raw"}, {"callback_url", "http://h"}, {"log_level", "loud"}});
    has(e, "'loud'");
    has(e, "webhook_config.log_level");
    e = error_of({{"webhook_type", "raw"}, {"callback_url", "http://h"}, {"webhook_urls", "x"}});
    has(e, "unknown key 'webhook_urls'");
    has(error_of({{"webhook_type", "raw"}, {"callback_url", "http://h"}, {"ssl_no_verify", 3}}),
        "webhook_config.ssl_no_verify");
    has(error_of(json("missing/hooks.json"), "/tmp/cfgdir"), "/tmp/cfgdir/missing/hooks.json");
    has(error_of(json("{not json")), "not valid JSON");
    has(error_of(json(42)), "must be an object, a list of objects or a path");
    has(error_of(json::array({"a string"})), "webhook_config[0] must be an object");
}

TEST_F(WebhookTest, RawPayloadCarriesSimpleTunerFieldsAndBase64Images) {
    TestServer server;
    auto png = make_file("frame.png", 3000);
    auto gif = make_file("anim.gif", 700);
    auto mp4 = make_file("clip.mp4", 5000);
    {
        WebhookSender sender({target(WebhookType::raw, server.url("/cb"))}, "job-7", "proj");
        Event ev;
        ev.type = "validation";
        ev.level = Severity::warning;
        ev.message = "Validation done\nsecond line";
        ev.data = {{"step", 100}, {"prompt", "a cat"}};
        ev.fields = {{"stage", {{"key", "validation"}, {"status", "completed"}}}, {"type", "must not win"}};
        ev.attachments = {png, gif, mp4};
        sender.send(ev);
        ASSERT_TRUE(sender.flush(10s));
        EXPECT_EQ(sender.stats().posted, 1);
    }
    auto reqs = server.requests();
    ASSERT_EQ(reqs.size(), 1u);
    EXPECT_EQ(reqs[0].method, "POST");
    EXPECT_EQ(reqs[0].path, "/cb");
    EXPECT_EQ(reqs[0].headers["content-type"], "application/json");
    json p = json::parse(reqs[0].body);
    EXPECT_EQ(p["type"], "validation");
    EXPECT_EQ(p["message_type"], "validation");
    EXPECT_EQ(p["severity"], "warning");
    EXPECT_EQ(p["job_id"], "job-7");
    EXPECT_EQ(p["message"], "Validation done\nsecond line");
    EXPECT_EQ(p["title"], "Validation done");
    EXPECT_EQ(p["data"]["step"], 100);
    EXPECT_EQ(p["stage"]["status"], "completed");
    const std::string ts = p["timestamp"];
    EXPECT_EQ(ts.size(), 32u) << ts;  // 2026-01-02T03:04:05.123456+00:00
    EXPECT_EQ(ts.substr(10, 1), "T");
    EXPECT_EQ(ts.substr(26), "+00:00");
    ASSERT_EQ(p["images"].size(), 2u);
    EXPECT_EQ(base64_decode(p["images"][0]), contents(png));
    EXPECT_EQ(base64_decode(p["images"][1]), contents(gif));
    ASSERT_EQ(p["videos"].size(), 1u);
    EXPECT_EQ(base64_decode(p["videos"][0]), contents(mp4));
}

TEST_F(WebhookTest, DiscordGetsContentJsonOrMultipartFiles) {
    TestServer server;
    auto png = make_file("shot.png", 4096);
    {
        WebhookSender sender({target(WebhookType::discord, server.url("/api/webhooks/1/secret")),
                              target(WebhookType::discord, server.url("/other"), Severity::info, "custom")},
                             "job", "my-project");
        Event text;
        text.message = "Training started";
        sender.send(text);
        Event progress;  // structured progress: raw targets only
        progress.type = "training.status";
        progress.message = "step 5";
        progress.raw_only = true;
        sender.send(progress);
        Event empty;  // nothing to say: not sent to Discord
        empty.type = "lifecycle.stage";
        sender.send(empty);
        Event with_file;
        with_file.type = "validation";
        with_file.message = "validation images";
        with_file.attachments = {png};
        sender.send(with_file);
        ASSERT_TRUE(sender.flush(10s));
        EXPECT_EQ(sender.stats().posted, 4);
        EXPECT_EQ(sender.stats().filtered, 4);
    }
    auto reqs = server.requests();
    ASSERT_EQ(reqs.size(), 4u);
    EXPECT_EQ(reqs[0].path, "/api/webhooks/1/secret");
    EXPECT_EQ(reqs[0].headers["content-type"], "application/json");
    EXPECT_EQ(json::parse(reqs[0].body), (json{{"content", "`(my-project)` Training started"}}));
    EXPECT_EQ(reqs[1].path, "/other");
    EXPECT_EQ(json::parse(reqs[1].body)["content"], "`(custom)` Training started");
    const auto& mp = reqs[2];
    EXPECT_EQ(mp.headers.at("content-type").rfind("multipart/form-data; boundary=", 0), 0u)
        << mp.headers.at("content-type");
    EXPECT_NE(mp.body.find("name=\"content\"\r\n\r\n`(my-project)` validation images\r\n"),
              std::string::npos);
    EXPECT_NE(mp.body.find("name=\"file0\"; filename=\"shot.png\"\r\nContent-Type: image/png\r\n\r\n"),
              std::string::npos)
        << mp.body.substr(0, 400);
    EXPECT_NE(mp.body.find(contents(png)), std::string::npos);
    // The Discord token never reaches the log.
    EXPECT_EQ(log_text().find("secret"), std::string::npos);
    EXPECT_NE(log_text().find("/api/webhooks/1/***"), std::string::npos);
}

TEST_F(WebhookTest, DiscordSplitsMoreThanTenAttachments) {
    TestServer server;
    std::vector<fs::path> files;
    for (int i = 0; i < 12; ++i) files.push_back(make_file("img" + std::to_string(i) + ".png", 64));
    WebhookSender sender({target(WebhookType::discord, server.url())}, "job");
    Event ev;
    ev.message = "many";
    ev.attachments = files;
    sender.send(ev);
    ASSERT_TRUE(sender.flush(10s));
    auto reqs = server.requests();
    ASSERT_EQ(reqs.size(), 2u);
    EXPECT_NE(reqs[0].body.find("filename=\"img9.png\""), std::string::npos);
    EXPECT_EQ(reqs[0].body.find("filename=\"img10.png\""), std::string::npos);
    EXPECT_NE(reqs[1].body.find("name=\"file1\"; filename=\"img11.png\""), std::string::npos);
}

TEST_F(WebhookTest, LogLevelFiltersPerTarget) {
    TestServer server;
    WebhookSender sender({target(WebhookType::raw, server.url("/warn"), Severity::warning),
                          target(WebhookType::raw, server.url("/debug"), Severity::debug)},
                         "job");
    for (auto level :
         {Severity::debug, Severity::info, Severity::warning, Severity::error, Severity::critical}) {
        Event ev;
        ev.level = level;
        ev.message = severity_name(level);
        sender.send(ev);
    }
    ASSERT_TRUE(sender.flush(10s));
    std::map<std::string, std::vector<std::string>> got;
    for (const auto& r : server.requests()) got[r.path].push_back(json::parse(r.body)["severity"]);
    EXPECT_EQ(got["/warn"], (std::vector<std::string>{"warning", "error", "critical"}));
    EXPECT_EQ(got["/debug"], (std::vector<std::string>{"debug", "info", "warning", "error", "critical"}));
    EXPECT_EQ(sender.stats().filtered, 2);
}

TEST_F(WebhookTest, FailuresAreLoggedWithUrlAndReasonNeverThrown) {
    TestServer failing(500);
    int closed_port;
    {
        TestServer probe;  // an ephemeral port that is then closed again
        closed_port = std::stoi(probe.url().substr(17, 5));
    }
    const std::string closed_url = "http://127.0.0.1:" + std::to_string(closed_port) + "/gone";
    WebhookSender sender(
        {target(WebhookType::raw, failing.url("/fail")), target(WebhookType::raw, closed_url)}, "job");
    Event ev;
    ev.message = "hello";
    ev.attachments = {dir_ / "deleted.png"};  // unreadable at send time: sent without it
    EXPECT_NO_THROW(sender.send(ev));
    ASSERT_TRUE(sender.flush(15s));
    EXPECT_EQ(sender.stats().failed, 2);
    EXPECT_EQ(sender.stats().posted, 0);
    const std::string log = log_text();
    EXPECT_NE(log.find(failing.url("/fail") + " failed: HTTP 500: some body"), std::string::npos) << log;
    EXPECT_NE(log.find(closed_url + " failed: "), std::string::npos) << log;
    EXPECT_NE(log.find("deleted.png unreadable"), std::string::npos) << log;
    ASSERT_EQ(failing.requests().size(), 1u);
    EXPECT_EQ(json::parse(failing.requests()[0].body)["images"], json::array());
}

TEST_F(WebhookTest, SlowServerDoesNotBlockTheCaller) {
    TestServer slow(200, 1000ms);
    WebhookSender sender({target(WebhookType::raw, slow.url())}, "job");
    for (int i = 0; i < 3; ++i) {
        Event ev;
        ev.message = "step " + std::to_string(i);
        auto t0 = Clock::now();
        sender.send(ev);
        // Behaviour, not a benchmark: a blocking send would take the server's full second.
        EXPECT_LT(Clock::now() - t0, 200ms) << "send " << i;
    }
    EXPECT_FALSE(sender.flush(50ms));
    ASSERT_TRUE(sender.flush(15s));
    EXPECT_EQ(slow.requests().size(), 3u);
    EXPECT_EQ(sender.stats().posted, 3);
}

TEST_F(WebhookTest, RequestTimeoutIsLoggedAsAFailure) {
    TestServer slow(200, 1500ms);
    WebhookSenderOptions opt;
    opt.request_timeout = 300ms;
    WebhookSender sender({target(WebhookType::raw, slow.url("/slow"))}, "job", "p", opt);
    Event ev;
    ev.message = "m";
    auto t0 = Clock::now();
    sender.send(ev);
    ASSERT_TRUE(sender.flush(5s));
    EXPECT_LT(Clock::now() - t0, 1400ms);  // gave up before the server answered
    EXPECT_EQ(sender.stats().failed, 1);
    const std::string log = log_text();
    EXPECT_NE(log.find(slow.url("/slow") + " failed: Operation timed out"), std::string::npos) << log;
}

TEST_F(WebhookTest, FullQueueDropsAndShutdownIsBounded) {
    TestServer slow(200, 1500ms);
    WebhookSenderOptions opt;
    opt.queue_capacity = 1;
    opt.shutdown_flush = 100ms;
    auto t0 = Clock::now();
    {
        WebhookSender sender({target(WebhookType::raw, slow.url("/slow"))}, "job", "p", opt);
        for (int i = 0; i < 4; ++i) {
            Event ev;
            ev.message = "m";
            sender.send(ev);
        }
        EXPECT_GE(sender.stats().dropped, 2);
        ASSERT_TRUE(slow.wait_for(1, 5s));
    }  // destructor: flush 100 ms, then abort what is in flight
    EXPECT_LT(Clock::now() - t0, 4s);
    const std::string log = log_text();
    EXPECT_NE(log.find("webhook queue full"), std::string::npos) << log;
    EXPECT_NE(log.find(slow.url("/slow") + " failed: aborted at shutdown"), std::string::npos) << log;
}

TEST_F(WebhookTest, UnsupportedAttachmentIsACallerError) {
    WebhookSender sender({target(WebhookType::raw, "http://127.0.0.1:9/x")}, "job");
    Event ev;
    ev.attachments = {dir_ / "notes.txt"};
    try {
        sender.send(ev);
        ADD_FAILURE() << "accepted a .txt attachment";
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("notes.txt"), std::string::npos) << e.what();
    }
}
