// SimpleTuner-compatible webhooks (`webhook_config`): Discord messages and "raw" JSON callbacks,
// POSTed with libcurl from a background thread so training never waits on the network.
//
// Follows SimpleTuner's simpletuner/helpers/webhooks/{config,handler,events}.py; the exact payloads
// are documented in docs/webhooks.md. Who calls: the host (trainer/validation) creates one
// WebhookSender per run and calls send() at lifecycle points; send() never blocks on the network and
// never throws for delivery problems (they are logged as warnings, one line per failed POST).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace st::host::notify {

enum class WebhookType { discord, raw };

/// SimpleTuner's webhook levels, most severe first (its `log_levels` map: critical 0 ... debug 4). A
/// target with log_level L receives the events whose level is L or more severe.
enum class Severity { critical = 0, error = 1, warning = 2, info = 3, debug = 4 };

/// "critical|error|warning|warn|info|debug" (case-insensitive); throws st::Error listing them otherwise.
Severity parse_severity(std::string_view name);
const char* severity_name(Severity level);

/// One configured destination (one object of `webhook_config`).
struct WebhookTarget {
    WebhookType type = WebhookType::raw;
    /// `webhook_url` (discord) or `callback_url` (raw); http:// or https://.
    std::string url;
    /// Discord messages start with "`(<message_prefix>)` "; empty -> the sender's project name.
    std::string message_prefix;
    Severity log_level = Severity::info;
    /// Skip TLS certificate and host name checks (self-signed callback servers).
    bool ssl_no_verify = false;
};

/// Parses SimpleTuner's `webhook_config`: an object, a list of objects, a string holding either as
/// JSON, or a string path to a JSON file holding either (relative paths are resolved against
/// `config_dir`, the directory of the config file). null -> no targets. Throws st::Error naming the
/// key ("webhook_config[1].webhook_type") for an unknown webhook_type (listing discord, raw), a
/// missing/empty url, a non-http(s) url, an unknown log_level or key, or an unreadable/invalid file.
std::vector<WebhookTarget> parse_webhook_config(const nlohmann::json& value,
                                                const std::filesystem::path& config_dir);

/// One notification. Types used by SimpleTuner: "lifecycle.stage", "training.status",
/// "training.checkpoint", "validation", "notification", "error".
struct Event {
    std::string type = "notification";
    Severity level = Severity::info;
    /// Human text: the Discord message; "message" in the raw payload (omitted there when empty).
    std::string message;
    /// Raw payload "title"; empty -> the first line of `message`.
    std::string title;
    /// Raw payload "data" (omitted when null or empty).
    nlohmann::json data = nullptr;
    /// Extra top-level raw payload fields, as SimpleTuner's event builders put them
    /// ({"stage": {...}} for lifecycle.stage, {"checkpoint": {...}}, {"progress": {...}}). They never
    /// replace the standard fields (type, job_id, timestamp, ...).
    nlohmann::json fields = nullptr;
    /// Images (.png .gif .jpg .jpeg .webp) and videos (.mp4 .webm .gif is an image): raw targets get
    /// them base64-encoded inline ("images" / "videos"), Discord targets as multipart files (at most
    /// 10 per message, more are split over several messages as SimpleTuner does). Read when the
    /// event is sent (on the background thread): the files must stay until then.
    std::vector<std::filesystem::path> attachments;
    /// SimpleTuner sends structured progress (send_raw: stage progress, step status) to raw targets
    /// only; set true for those so Discord is not flooded. Events with an empty message never go to
    /// Discord either.
    bool raw_only = false;
};

struct WebhookSenderOptions {
    /// Events waiting to be sent; when full, new events are dropped (with a warning), never waited for.
    size_t queue_capacity = 64;
    /// Whole POST (connect + upload + response), and connection set-up alone.
    std::chrono::milliseconds request_timeout{10000};
    std::chrono::milliseconds connect_timeout{5000};
    /// How long the destructor waits for queued events before aborting what is left.
    std::chrono::milliseconds shutdown_flush{3000};
};

/// Counters since construction (for logs and tests).
struct WebhookStats {
    int64_t posted = 0;    ///< POSTs answered with HTTP < 400
    int64_t failed = 0;    ///< POSTs that failed (connection, timeout, HTTP >= 400, unreadable file)
    int64_t filtered = 0;  ///< (event, target) pairs skipped by the target's log_level or raw_only
    int64_t dropped = 0;   ///< events dropped because the queue was full or the sender was closing
};

class WebhookSender {
  public:
    /// `job_id`: the raw payload's "job_id" (null when empty). `project_name`: default Discord prefix.
    WebhookSender(std::vector<WebhookTarget> targets, std::string job_id, std::string project_name = "st",
                  WebhookSenderOptions options = {});
    /// Flushes for options.shutdown_flush, then aborts any request still in flight and joins.
    ~WebhookSender();
    WebhookSender(const WebhookSender&) = delete;
    WebhookSender& operator=(const WebhookSender&) = delete;

    /// Queues `event` for every target whose log_level admits it; returns at once. Throws st::Error
    /// only for a caller bug: an attachment whose extension is neither an image nor a video.
    void send(Event event);
    /// Waits until every queued event has been sent (or has failed). False on timeout.
    bool flush(std::chrono::milliseconds timeout);

    const std::vector<WebhookTarget>& targets() const { return targets_; }
    WebhookStats stats() const;

  private:
    void run();
    void deliver(void* curl, const Event& event);
    /// One POST; logs and counts a failure. `mime` (a curl_mime*) or `json_body` is the body.
    bool post(void* curl, const WebhookTarget& target, const std::string& event_type,
              const std::string* json_body, void* mime);

    std::vector<WebhookTarget> targets_;
    std::string job_id_;
    std::string project_name_;
    WebhookSenderOptions options_;

    mutable std::mutex mutex_;
    std::condition_variable wake_;     // worker: an event arrived or stop
    std::condition_variable drained_;  // flush(): queue empty and nothing in flight
    std::deque<Event> queue_;
    bool busy_ = false;
    bool stop_ = false;
    std::atomic<bool> abort_{false};  // read by libcurl's progress callback to cut an in-flight POST
    WebhookStats stats_;
    std::thread worker_;
};

}  // namespace st::host::notify
