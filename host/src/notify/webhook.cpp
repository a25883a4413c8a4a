// SimpleTuner-compatible webhooks over libcurl. Config rules follow
// simpletuner/helpers/webhooks/config.py (WebhookConfig, check_*_webhook_config); payloads follow
// handler.py (_send_request_to_backend, send_raw) and events.py (the structured event builders).
#include "notify/webhook.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <fstream>
#include <optional>
#include <sstream>
#include <system_error>

#include "st/error.h"
#include "st/json_file.h"
#include "st/log.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace st::host::notify {
namespace {

constexpr const char* kComponent = "host.webhook";
constexpr size_t kDiscordMaxAttachments = 10;  // Discord's limit per message (handler.py splits too)
constexpr size_t kDiscordMaxContent = 2000;    // Discord rejects longer "content" with HTTP 400
const std::vector<std::string> kKnownKeys = {"webhook_type",   "webhook_url", "callback_url",
                                             "message_prefix", "log_level",   "ssl_no_verify"};

std::string lower(std::string_view s) {
    std::string r(s);
    for (auto& c : r) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return r;
}

std::string join(const std::vector<std::string>& v) {
    std::string r;
    for (const auto& s : v) r += (r.empty() ? "" : ", ") + s;
    return r;
}

enum class AttachmentKind { image, video };

std::optional<AttachmentKind> kind_of(const fs::path& p) {
    const std::string ext = lower(p.extension().string());
    if (ext == ".png" || ext == ".gif" || ext == ".jpg" || ext == ".jpeg" || ext == ".webp")
        return AttachmentKind::image;
    if (ext == ".mp4" || ext == ".webm") return AttachmentKind::video;
    return std::nullopt;
}

std::string mime_of(const fs::path& p) {
    const std::string ext = lower(p.extension().string());
    if (ext == ".png") return "image/png";
    if (ext == ".gif") return "image/gif";
    if (ext == ".jpg" || ext == ".jpeg") return "image/jpeg";
    if (ext == ".webp") return "image/webp";
    if (ext == ".webm") return "video/webm";
    return "video/mp4";
}

std::string base64(const std::string& in) {
    static const char* kTable = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    out.reserve((in.size() + 2) / 3 * 4);
    size_t i = 0;
    for (; i + 2 < in.size(); i += 3) {
        uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
        for (int s = 18; s >= 0; s -= 6) out += kTable[(v >> s) & 63];
    }
    if (i < in.size()) {
        uint32_t v = uint8_t(in[i]) << 16;
        if (i + 1 < in.size()) v |= uint8_t(in[i + 1]) << 8;
        out += kTable[(v >> 18) & 63];
        out += kTable[(v >> 12) & 63];
        out += i + 1 < in.size() ? kTable[(v >> 6) & 63] : '=';
        out += '=';
    }
    return out;
}

// ISO 8601 UTC with microseconds and offset, as Python's datetime.now(tz=timezone.utc).isoformat().
std::string iso_timestamp_utc() {
    auto now = std::chrono::system_clock::now();
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count();
    std::time_t secs = static_cast<std::time_t>(us / 1000000);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[64];
    std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    return fmt::format("{}.{:06d}+00:00", buf, static_cast<int>(us % 1000000));
}

// Discord webhook URLs carry their secret token as the last path segment: never log it.
std::string redact(const WebhookTarget& t) {
    std::string url = t.url.substr(0, t.url.find('?'));
    if (t.type != WebhookType::discord) return url;
    auto pos = url.find("/webhooks/");
    if (pos == std::string::npos) return url;
    auto id_end = url.find('/', pos + 10);
    return id_end == std::string::npos ? url : url.substr(0, id_end + 1) + "***";
}

// Cuts at a UTF-8 character boundary.
std::string truncate_utf8(std::string s, size_t max_bytes) {
    if (s.size() <= max_bytes) return s;
    size_t cut = max_bytes;
    while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
    s.resize(cut);
    return s;
}

std::string first_line(const std::string& s) {
    return s.substr(0, s.find('\n'));
}

bool read_file(const fs::path& p, std::string& out, std::string& error) {
    std::ifstream f(p, std::ios::binary);
    if (!f) {
        error = std::error_code(errno, std::generic_category()).message();
        return false;
    }
    std::ostringstream ss;
    ss << f.rdbuf();
    out = ss.str();
    return true;
}

// ---- config ---------------------------------------------------------------------------------------

std::string required_url(const json& obj, const std::string& field, const std::string& where,
                         const std::string& type) {
    if (!obj.contains(field))
        fail(kComponent, "config", "{}: a '{}' webhook needs '{}' (the URL to POST to)", where, type, field);
    const json& v = obj.at(field);
    if (!v.is_string() || v.get<std::string>().empty())
        fail(kComponent, "config", "{}.{} must be a non-empty URL string, got {}", where, field, v.dump());
    std::string url = v.get<std::string>();
    const std::string l = lower(url);
    if (l.rfind("http://", 0) != 0 && l.rfind("https://", 0) != 0)
        fail(kComponent, "config", "{}.{} must start with http:// or https://, got '{}'", where, field, url);
    return url;
}

WebhookTarget parse_target(const json& obj, const std::string& where) {
    if (!obj.is_object())
        fail(kComponent, "config", "{} must be an object with webhook_type and a URL, got {}", where,
             obj.dump());
    for (const auto& [key, _] : obj.items())
        if (std::find(kKnownKeys.begin(), kKnownKeys.end(), key) == kKnownKeys.end())
            fail(kComponent, "config", "{}: unknown key '{}'; valid keys: {}", where, key, join(kKnownKeys));
    if (!obj.contains("webhook_type"))
        fail(kComponent, "config", "{}: missing 'webhook_type'; valid webhook types: discord, raw", where);
    const json& type = obj.at("webhook_type");
    const std::string type_name = type.is_string() ? type.get<std::string>() : type.dump();
    WebhookTarget t;
    if (type_name == "discord") {
        t.type = WebhookType::discord;
        t.url = required_url(obj, "webhook_url", where, type_name);
    } else if (type_name == "raw") {
        t.type = WebhookType::raw;
        t.url = required_url(obj, "callback_url", where, type_name);
    } else {
        fail(kComponent, "config", "{}.webhook_type: '{}' is not a valid webhook type; valid: discord, raw",
             where, type_name);
    }
    if (obj.contains("message_prefix") && !obj.at("message_prefix").is_null()) {
        if (!obj.at("message_prefix").is_string())
            fail(kComponent, "config", "{}.message_prefix must be a string, got {}", where,
                 obj.at("message_prefix").dump());
        t.message_prefix = obj.at("message_prefix").get<std::string>();
    }
    if (obj.contains("log_level") && !obj.at("log_level").is_null()) {
        const json& lv = obj.at("log_level");
        if (!lv.is_string())
            fail(kComponent, "config",
                 "{}.log_level must be a string (critical, error, warning, info, debug), got {}", where,
                 lv.dump());
        try {
            t.log_level = parse_severity(lv.get<std::string>());
        } catch (const st::Error& e) {
            throw e.with_context(fmt::format("while reading {}.log_level", where));
        }
    }
    if (obj.contains("ssl_no_verify") && !obj.at("ssl_no_verify").is_null()) {
        const json& v = obj.at("ssl_no_verify");
        if (v.is_boolean()) {
            t.ssl_no_verify = v.get<bool>();
        } else if (v.is_string() &&
                   (lower(v.get<std::string>()) == "true" || lower(v.get<std::string>()) == "false")) {
            t.ssl_no_verify = lower(v.get<std::string>()) == "true";
        } else {
            fail(kComponent, "config", "{}.ssl_no_verify must be true or false, got {}", where, v.dump());
        }
    }
    return t;
}

std::vector<WebhookTarget> parse_value(const json& value, const fs::path& config_dir,
                                       const std::string& where, bool allow_path) {
    std::vector<WebhookTarget> targets;
    if (value.is_null()) return targets;
    if (value.is_object()) {
        targets.push_back(parse_target(value, where));
        return targets;
    }
    if (value.is_array()) {
        for (size_t i = 0; i < value.size(); ++i)
            targets.push_back(parse_target(value[i], fmt::format("{}[{}]", where, i)));
        return targets;
    }
    if (value.is_string() && allow_path) {
        const std::string text = value.get<std::string>();
        const auto start = text.find_first_not_of(" \t\r\n");
        if (start == std::string::npos) fail(kComponent, "config", "{} is an empty string", where);
        if (text[start] == '{' || text[start] == '[') {
            sdk::check_json_limits(text, where, kComponent);
            json parsed = json::parse(text, nullptr, false);
            if (parsed.is_discarded())
                fail(kComponent, "config", "{}: the string starts like JSON but is not valid JSON: {}", where,
                     text);
            return parse_value(parsed, config_dir, where, false);
        }
        fs::path path = text;
        // Relative to the current directory (SimpleTuner runs from its root), else to the config file.
        if (path.is_relative() && !fs::exists(path)) path = config_dir / path;
        std::string contents, error;
        if (!fs::is_regular_file(path))
            fail(kComponent, "config",
                 "{}: '{}' is not a readable JSON file (looked in the current directory {} and next to the "
                 "config file: {})",
                 where, text, fs::current_path().string(), path.string());
        if (!read_file(path, contents, error))
            fail(kComponent, "config", "{}: cannot read {}: {}", where, path.string(), error);
        sdk::check_json_limits(contents, path.string(), kComponent);
        json parsed = json::parse(contents, nullptr, false);
        if (parsed.is_discarded())
            fail(kComponent, "config", "{}: {} is not valid JSON", where, path.string());
        return parse_value(parsed, config_dir, fmt::format("{} ({})", where, path.string()), false);
    }
    fail(kComponent, "config", "{} must be an object, a list of objects{}, got {}", where,
         allow_path ? " or a path to a JSON file with either" : "", value.dump());
}

// ---- libcurl callbacks ----------------------------------------------------------------------------

size_t keep_head(char* data, size_t size, size_t n, void* user) {
    auto* s = static_cast<std::string*>(user);
    if (s->size() < 300) s->append(data, std::min(size * n, 300 - s->size()));
    return size * n;
}

int abort_check(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
    return static_cast<std::atomic<bool>*>(user)->load() ? 1 : 0;
}

void curl_init_once() {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct Attachment {
    fs::path path;
    AttachmentKind kind;
    std::string bytes;
};

}  // namespace

Severity parse_severity(std::string_view name) {
    const std::string n = lower(name);
    if (n == "critical") return Severity::critical;
    if (n == "error") return Severity::error;
    if (n == "warning" || n == "warn") return Severity::warning;
    if (n == "info") return Severity::info;
    if (n == "debug") return Severity::debug;
    fail(kComponent, "config", "unknown webhook log level '{}'; valid: critical, error, warning, info, debug",
         name);
}

const char* severity_name(Severity level) {
    switch (level) {
        case Severity::critical:
            return "critical";
        case Severity::error:
            return "error";
        case Severity::warning:
            return "warning";
        case Severity::info:
            return "info";
        case Severity::debug:
            return "debug";
    }
    return "info";
}

std::vector<WebhookTarget> parse_webhook_config(const json& value, const fs::path& config_dir) {
    return parse_value(value, config_dir, "webhook_config", true);
}

WebhookSender::WebhookSender(std::vector<WebhookTarget> targets, std::string job_id, std::string project_name,
                             WebhookSenderOptions options)
    : targets_(std::move(targets)),
      job_id_(std::move(job_id)),
      project_name_(std::move(project_name)),
      options_(options) {
    if (options_.queue_capacity == 0) options_.queue_capacity = 1;
    curl_init_once();
    for (const auto& t : targets_)
        st::log::info(kComponent, "webhook: {} -> {} (log_level {})",
                      t.type == WebhookType::discord ? "discord" : "raw", redact(t),
                      severity_name(t.log_level));
    worker_ = std::thread([this] { run(); });
}

WebhookSender::~WebhookSender() {
    if (!flush(options_.shutdown_flush))
        st::log::warn(kComponent, "webhook queue not drained after {} ms at shutdown; aborting",
                      options_.shutdown_flush.count());
    {
        std::lock_guard<std::mutex> lk(mutex_);
        stop_ = true;
        abort_ = true;
        stats_.dropped += static_cast<int64_t>(queue_.size());
        queue_.clear();
    }
    wake_.notify_all();
    if (worker_.joinable()) worker_.join();
}

void WebhookSender::send(Event event) {
    for (const auto& a : event.attachments)
        if (!kind_of(a))
            fail(kComponent, "send",
                 "attachment {} of event '{}' is neither an image (.png .gif .jpg .jpeg .webp) "
                 "nor a video (.mp4 .webm)",
                 a.string(), event.type);
    bool any = false;
    for (const auto& t : targets_) any = any || event.level <= t.log_level;
    std::unique_lock<std::mutex> lk(mutex_);
    if (!any) {
        stats_.filtered += static_cast<int64_t>(targets_.size());
        return;
    }
    if (stop_ || queue_.size() >= options_.queue_capacity) {
        ++stats_.dropped;
        const size_t queued = queue_.size();
        lk.unlock();
        st::log::warn(kComponent, "webhook queue full ({} events waiting): dropping event '{}'", queued,
                      event.type);
        return;
    }
    queue_.push_back(std::move(event));
    lk.unlock();
    wake_.notify_one();
}

bool WebhookSender::flush(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lk(mutex_);
    return drained_.wait_for(lk, timeout, [this] { return queue_.empty() && !busy_; });
}

WebhookStats WebhookSender::stats() const {
    std::lock_guard<std::mutex> lk(mutex_);
    return stats_;
}

void WebhookSender::run() {
    CURL* curl = curl_easy_init();
    for (;;) {
        Event event;
        {
            std::unique_lock<std::mutex> lk(mutex_);
            wake_.wait(lk, [this] { return stop_ || !queue_.empty(); });
            if (queue_.empty()) break;
            event = std::move(queue_.front());
            queue_.pop_front();
            busy_ = true;
        }
        try {
            if (!curl) throw std::runtime_error("curl_easy_init failed");
            deliver(curl, event);
        } catch (const std::exception& e) {
            // A webhook must never take the run down: report and go on with the next event.
            st::log::warn(kComponent, "webhook event '{}' not sent: {}", event.type, e.what());
            std::lock_guard<std::mutex> lk(mutex_);
            ++stats_.failed;
        }
        {
            std::lock_guard<std::mutex> lk(mutex_);
            busy_ = false;
            if (queue_.empty()) drained_.notify_all();
        }
    }
    if (curl) curl_easy_cleanup(curl);
    std::lock_guard<std::mutex> lk(mutex_);
    drained_.notify_all();
}

void WebhookSender::deliver(void* curl, const Event& event) {
    std::vector<Attachment> files;
    for (const auto& p : event.attachments) {
        Attachment a{p, *kind_of(p), {}};
        std::string error;
        if (!read_file(p, a.bytes, error)) {
            st::log::warn(kComponent, "webhook attachment {} unreadable ({}); sending event '{}' without it",
                          p.string(), error, event.type);
            continue;
        }
        files.push_back(std::move(a));
    }
    std::optional<std::string> raw_body;
    for (const auto& t : targets_) {
        const bool discord = t.type == WebhookType::discord;
        if (event.level > t.log_level || (discord && (event.raw_only || event.message.empty()))) {
            std::lock_guard<std::mutex> lk(mutex_);
            ++stats_.filtered;
            continue;
        }
        if (!discord) {
            if (!raw_body) {
                // handler.py send_raw + events.py: the structured fields, then "message"/"images" as
                // its send() path posts them.
                json p = event.fields.is_object() ? event.fields : json::object();
                p["type"] = event.type;
                p["message_type"] = event.type;
                p["severity"] = severity_name(event.level);
                p["job_id"] = job_id_.empty() ? json(nullptr) : json(job_id_);
                p["timestamp"] = iso_timestamp_utc();
                if (!event.message.empty()) p["message"] = event.message;
                const std::string title = event.title.empty() ? first_line(event.message) : event.title;
                if (!title.empty()) p["title"] = title;
                if (!event.data.is_null() && !(event.data.is_object() && event.data.empty()))
                    p["data"] = event.data;
                json images = json::array(), videos = json::array();
                for (const auto& f : files)
                    (f.kind == AttachmentKind::image ? images : videos).push_back(base64(f.bytes));
                p["images"] = std::move(images);
                if (!videos.empty()) p["videos"] = std::move(videos);
                raw_body = p.dump(-1, ' ', false, json::error_handler_t::replace);
            }
            post(curl, t, event.type, &*raw_body, nullptr);
            continue;
        }
        const std::string prefix =
            "`(" + (t.message_prefix.empty() ? project_name_ : t.message_prefix) + ")` ";
        const std::string content = truncate_utf8(prefix + event.message, kDiscordMaxContent);
        if (files.empty()) {
            const std::string body =
                json{{"content", content}}.dump(-1, ' ', false, json::error_handler_t::replace);
            post(curl, t, event.type, &body, nullptr);
            continue;
        }
        for (size_t start = 0; start < files.size(); start += kDiscordMaxAttachments) {
            curl_mime* mime = curl_mime_init(static_cast<CURL*>(curl));
            curl_mimepart* part = curl_mime_addpart(mime);
            curl_mime_name(part, "content");
            curl_mime_data(part, content.data(), content.size());
            for (size_t i = start; i < std::min(files.size(), start + kDiscordMaxAttachments); ++i) {
                part = curl_mime_addpart(mime);
                curl_mime_name(part, fmt::format("file{}", i - start).c_str());
                curl_mime_filename(part, files[i].path.filename().string().c_str());
                curl_mime_type(part, mime_of(files[i].path).c_str());
                curl_mime_data(part, files[i].bytes.data(), files[i].bytes.size());
            }
            post(curl, t, event.type, nullptr, mime);
            curl_mime_free(mime);
        }
    }
}

bool WebhookSender::post(void* handle, const WebhookTarget& t, const std::string& event_type,
                         const std::string* json_body, void* mime) {
    CURL* curl = static_cast<CURL*>(handle);
    curl_easy_reset(curl);
    char errbuf[CURL_ERROR_SIZE] = {0};
    std::string response;
    curl_slist* headers = nullptr;
    // No "Expect: 100-continue" round trip before large bodies.
    headers = curl_slist_append(headers, "Expect:");
    if (json_body) headers = curl_slist_append(headers, "Content-Type: application/json");
    curl_easy_setopt(curl, CURLOPT_URL, t.url.c_str());
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);  // required with timeouts in a threaded program
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(options_.request_timeout.count()));
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(options_.connect_timeout.count()));
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, keep_head);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &response);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, abort_check);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &abort_);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "st-host webhook");
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    if (t.ssl_no_verify) {
        curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (json_body) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, json_body->data());
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(json_body->size()));
    } else {
        curl_easy_setopt(curl, CURLOPT_MIMEPOST, static_cast<curl_mime*>(mime));
    }
    const CURLcode res = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(headers);

    std::string reason;
    if (res != CURLE_OK) {
        reason = abort_ ? std::string("aborted at shutdown") : (errbuf[0] ? errbuf : curl_easy_strerror(res));
    } else if (status >= 400) {
        while (!response.empty() && std::isspace(static_cast<unsigned char>(response.back())))
            response.pop_back();
        for (auto& c : response)
            if (c == '\n' || c == '\r') c = ' ';  // one log line per failure
        reason = fmt::format("HTTP {}{}{}", status, response.empty() ? "" : ": ", response);
    }
    {
        std::lock_guard<std::mutex> lk(mutex_);
        ++(reason.empty() ? stats_.posted : stats_.failed);
    }
    if (reason.empty()) {
        st::log::debug(kComponent, "webhook '{}' posted to {} (HTTP {})", event_type, redact(t), status);
        return true;
    }
    st::log::warn(kComponent, "webhook '{}' POST to {} failed: {}", event_type, redact(t), reason);
    return false;
}

}  // namespace st::host::notify
