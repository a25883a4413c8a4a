// LocalDataBackend end to end with FakeEncoders (a test double, see fixtures.h): bad input never
// crashes and is counted, caches are written/reused/rebuilt, batches come from one bucket.
#include "backend.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <set>

#include "cache.h"
#include "fixtures.h"
#include "st/bucket_alignment.h"
#include "st/error.h"

namespace dl = st::plugins::data_local;
namespace fs = std::filesystem;
using nlohmann::json;
using st_test::TempDir;

namespace {

// `media`: the model's Encoders::sample_media() ({audio} for a speech-to-video model).
st::sdk::DataOpenRequest request(const fs::path& root, json entries, json config = json::object(),
                                 std::vector<st::sdk::MediaKind> media = {}) {
    st::sdk::DataOpenRequest r;
    r.entries = std::move(entries);
    r.config_dir = root;
    r.output_dir = root / "out";
    r.model_family = "fake";
    r.model_media = std::move(media);
    r.config = st::sdk::ConfigView(std::make_shared<json>(std::move(config)));
    r.seed = 42;
    return r;
}

json video_entry(const std::string& id, const std::string& dir, int frames = 9) {
    return {{"id", id},
            {"type", "local"},
            {"dataset_type", "video"},
            {"instance_data_dir", dir},
            {"resolution", 64},
            {"resolution_type", "pixel_area"},
            {"caption_strategy", "filename"},
            {"cache_dir_vae", "cache/vae/" + id},
            {"video", {{"num_frames", frames}}}};
}

json text_entry() {
    return {{"id", "text"}, {"dataset_type", "text_embeds"}, {"default", true}, {"cache_dir", "cache/text"}};
}

std::string reason_for(const std::vector<dl::SkipRecord>& skipped, const std::string& name) {
    for (const auto& s : skipped)
        if (fs::path(s.file).filename() == name) return s.reason;
    return "";
}

}  // namespace

TEST(DataBackendTest, BadInputIsSkippedCountedAndNeverCrashes) {
    TempDir dir("backend-bad");
    const fs::path v = dir.path / "videos";
    st_test::make_clip(v / "good_clip.mp4", 96, 64, 10, 1.2);
    st_test::make_clip(v / "sub dir" / "ünïcode clip ✓.mp4", 96, 64, 10, 1.2);
    st_test::write_text(v / "zero.mp4", "");
    st_test::make_clip(v / "full.mp4", 96, 64, 10, 1.2);
    {  // truncated: first 600 bytes of a real mp4 (moov at the end -> unreadable)
        std::ifstream in(v / "full.mp4", std::ios::binary);
        std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        st_test::write_text(v / "truncated.mp4", bytes.substr(0, 600));
        fs::remove(v / "full.mp4");
    }
    st_test::write_text(v / "notvideo.mp4", "hello, I am text\n");
    st_test::ffmpeg("-f lavfi -i sine=duration=1 -c:a aac '" + (v / "audio_only.mp4").string() + "'");
    st_test::ffmpeg("-f lavfi -i testsrc=size=16x16 -f lavfi -i sine=duration=1 -map 1 -c:a pcm_s16le '" +
                    (v / "no_video.mkv").string() + "'");
    st_test::make_clip(v / "short.mp4", 96, 64, 10, 0.5);    // 5 frames < min_frames 9
    fs::create_directories(v / "folder.mp4");                // a directory named like a video
    ASSERT_EQ(::mkfifo((v / "fifo.mp4").c_str(), 0644), 0);  // unreadable: tests run as root, so a fifo
    fs::create_symlink(v / "missing.mp4", v / "dangling.mp4");
    fs::create_directory_symlink(v, v / "loop");     // symlink loop
    fs::create_symlink("self.mp4", v / "self.mp4");  // self-referencing link (ELOOP)

    dl::LocalDataBackend b;
    b.open(request(dir.path, json::array({video_entry("clips", "videos"), text_entry()})));
    st_test::FakeEncoders enc;
    const auto summary = b.prepare(&enc);
    EXPECT_EQ(summary.samples, 2);
    const auto& sk = b.skipped();
    EXPECT_NE(reason_for(sk, "zero.mp4").find("empty file"), std::string::npos);
    EXPECT_NE(reason_for(sk, "truncated.mp4").find("not a readable media file"), std::string::npos);
    EXPECT_NE(reason_for(sk, "notvideo.mp4").find("not a readable media file"), std::string::npos);
    EXPECT_NE(reason_for(sk, "audio_only.mp4").find("audio-only"), std::string::npos);
    EXPECT_NE(reason_for(sk, "no_video.mkv").find("no video stream"), std::string::npos);
    EXPECT_NE(reason_for(sk, "short.mp4").find("fewer than min_frames 9"), std::string::npos);
    EXPECT_NE(reason_for(sk, "fifo.mp4").find("not a regular file"), std::string::npos);
    EXPECT_NE(reason_for(sk, "dangling.mp4").find("symlink"), std::string::npos);
    EXPECT_NE(reason_for(sk, "self.mp4").find("symlink"), std::string::npos);
    EXPECT_NE(reason_for(sk, "loop").find("symlink loop"), std::string::npos);
    EXPECT_EQ(summary.skipped, static_cast<int64_t>(sk.size()));
    EXPECT_EQ(summary.details["skipped"].size(), sk.size());
    // Unicode + spaces: the filename caption keeps them.
    bool unicode = false;
    for (const auto& s : b.samples()) unicode |= s.captions[0] == "ünïcode clip ✓";
    EXPECT_TRUE(unicode);
    // delete_problematic_images was not set: nothing deleted.
    EXPECT_TRUE(fs::exists(v / "zero.mp4"));
    EXPECT_TRUE(fs::exists(v / "notvideo.mp4"));

    // Explicitly true: only broken media go, never short clips or caption problems.
    dl::LocalDataBackend del;
    del.open(request(dir.path, json::array({video_entry("clips", "videos"), text_entry()}),
                     {{"delete_problematic_images", true}}));
    del.prepare(&enc);
    EXPECT_FALSE(fs::exists(v / "zero.mp4"));
    EXPECT_FALSE(fs::exists(v / "notvideo.mp4"));
    EXPECT_TRUE(fs::exists(v / "short.mp4"));
    EXPECT_TRUE(fs::exists(v / "good_clip.mp4"));
}

TEST(DataBackendTest, CaptionStrategies) {
    TempDir dir("backend-captions");
    const fs::path v = dir.path / "v";
    st_test::make_clip(v / "a.mp4", 96, 64, 10, 1.0);
    st_test::make_clip(v / "b.mp4", 96, 64, 10, 1.0);
    st_test::make_clip(v / "c.mp4", 96, 64, 10, 1.0);
    st_test::write_text(v / "a.txt", "first caption\n\nsecond caption\n");
    st_test::write_text(v / "b.txt", std::string("\x00\x01\x02\xff binary", 11));
    auto entry = video_entry("caps", "v");
    entry["caption_strategy"] = "textfile";
    dl::LocalDataBackend b;
    b.open(request(dir.path, json::array({entry, text_entry()}), {{"disable_bucket_pruning", true}}));
    st_test::FakeEncoders enc;
    b.prepare(&enc);
    ASSERT_EQ(b.samples().size(), 1u);
    EXPECT_EQ(b.samples()[0].captions, (std::vector<std::string>{"first caption", "second caption"}));
    EXPECT_NE(reason_for(b.skipped(), "b.mp4").find("not UTF-8 text"), std::string::npos);
    EXPECT_NE(reason_for(b.skipped(), "c.mp4").find("c.txt is missing"), std::string::npos);
    entry["caption_strategy"] = "instanceprompt";
    entry["instance_prompt"] = "a person talking";
    dl::LocalDataBackend ip;
    ip.open(request(dir.path, json::array({entry, text_entry()})));
    ip.prepare(&enc);
    EXPECT_EQ(ip.samples().size(), 3u);
    EXPECT_EQ(ip.samples()[0].captions[0], "a person talking");
}

TEST(DataBackendTest, CachesAreWrittenReusedAndRebuiltWhenStale) {
    TempDir dir("backend-cache");
    const fs::path v = dir.path / "v";
    for (int i = 0; i < 3; ++i)
        st_test::make_clip(v / ("clip_" + std::to_string(i) + ".mp4"), 96, 64, 10, 1.2);
    st_test::make_clip(v / "tall.mp4", 64, 96, 10, 1.2);
    const json entries = json::array({video_entry("c", "v"), text_entry()});
    const json cfg = {{"vae_batch_size", 2},
                      {"write_batch_size", 3},
                      {"compress_disk_cache", true},
                      {"disable_bucket_pruning", true}};
    st_test::FakeEncoders enc;
    {
        dl::LocalDataBackend b;
        b.open(request(dir.path, entries, cfg));
        const auto s = b.prepare(&enc);
        EXPECT_EQ(s.samples, 4);
        EXPECT_EQ(s.details["datasets"]["c"]["buckets"].size(), 2u);
        for (int64_t n : enc.video_batches) EXPECT_LE(n, 2);  // vae_batch_size honoured
        for (int64_t n : enc.text_batches) EXPECT_LE(n, 3);   // write_batch_size honoured
        const auto& c0 = b.sample_cache(0);
        ASSERT_TRUE(fs::exists(c0.latent_file.string() + ".gz"));
        std::ifstream in(c0.latent_file.string() + ".gz", std::ios::binary);
        EXPECT_EQ(in.get(), 0x1f);  // gzip magic
        EXPECT_EQ(in.get(), 0x8b);
        // Batches: one bucket each, [B, C, F, H, W] latents.
        b.start_epoch(0);
        int batches = 0;
        while (auto batch = b.next_batch(2)) {
            ++batches;
            ASSERT_EQ(batch->samples.size(), 2u);
            EXPECT_EQ(batch->samples[0].bucket, batch->samples[1].bucket);
            const auto& lat = batch->tensors.at("latents");
            EXPECT_EQ(lat.dim(), 5);
            EXPECT_EQ(lat.size(0), 2);
            EXPECT_EQ(lat.size(1), 16);
            EXPECT_EQ(lat.size(2), 3);  // 9 frames -> (9-1)/4+1
            EXPECT_EQ(batch->tensors.at("prompt_embeds").sizes(), (std::vector<int64_t>{2, 8, 4}));
        }
        EXPECT_EQ(batches, b.batches_per_epoch(2));
    }
    const size_t calls = enc.video_batches.size();
    const size_t text_calls = enc.text_batches.size();
    {  // Same settings: everything reused.
        dl::LocalDataBackend b;
        b.open(request(dir.path, entries, cfg));
        b.prepare(&enc);
        EXPECT_EQ(enc.video_batches.size(), calls);
        EXPECT_EQ(enc.text_batches.size(), text_calls);
    }
    {  // New encoder identity: stale -> rebuilt, uncompressed now.
        enc.identity = "fake-encoders-v2";
        json cfg2 = cfg;
        cfg2["compress_disk_cache"] = false;
        dl::LocalDataBackend b;
        b.open(request(dir.path, entries, cfg2));
        b.prepare(&enc);
        EXPECT_GT(enc.video_batches.size(), calls);
        EXPECT_TRUE(fs::exists(b.sample_cache(0).latent_file));
        EXPECT_FALSE(fs::exists(b.sample_cache(0).latent_file.string() + ".gz"));
    }
    {  // Changed content of one file: only that one is re-encoded.
        const size_t before = enc.video_batches.size();
        st_test::make_clip(v / "clip_1.mp4", 96, 64, 10, 1.3);
        json cfg2 = cfg;
        cfg2["compress_disk_cache"] = false;
        dl::LocalDataBackend b;
        b.open(request(dir.path, entries, cfg2));
        b.prepare(&enc);
        ASSERT_EQ(enc.video_batches.size(), before + 1);
        EXPECT_EQ(enc.video_batches.back(), 1);
    }
}

TEST(DataBackendTest, EvalDatasetsAreCachedButNeverServedForTraining) {
    TempDir dir("backend-eval");
    for (int i = 0; i < 3; ++i)
        st_test::make_clip(dir.path / "v" / ("t" + std::to_string(i) + ".mp4"), 96, 64, 10, 1.0);
    st_test::make_clip(dir.path / "e" / "e0.mp4", 96, 64, 10, 1.0);
    st_test::make_clip(dir.path / "e" / "e1.mp4", 96, 64, 10, 1.0);
    st_test::make_clip(dir.path / "e" / "e2.mp4", 64, 96, 10, 1.0);  // another bucket
    json held = video_entry("held", "e");
    held["dataset_type"] = "eval";
    st_test::FakeEncoders enc;
    dl::LocalDataBackend b;
    // Batch 2 x accumulation 2 = 4 > 3 eval samples: eval datasets are never pruned for the batch.
    b.open(request(dir.path, json::array({video_entry("train", "v"), held, text_entry()}),
                   {{"train_batch_size", 1}, {"gradient_accumulation_steps", 3}}));
    const auto summary = b.prepare(&enc);
    EXPECT_EQ(summary.samples, 6);
    EXPECT_EQ(summary.details["datasets"]["held"]["eval"], true);
    EXPECT_EQ(summary.details["datasets"]["held"]["samples"], 3);
    EXPECT_EQ(b.batches_per_epoch(1), 3);  // training samples only
    b.start_epoch(0);
    std::set<std::string> trained;
    while (auto batch = b.next_batch(1))
        for (const auto& s : batch->samples) trained.insert(s.dataset_id);
    EXPECT_EQ(trained, std::set<std::string>{"train"});

    const auto all = b.eval_batches(0, 4);
    ASSERT_EQ(all.size(), 2u);  // two buckets
    std::vector<std::string> ids;
    for (const auto& batch : all) {
        EXPECT_EQ(batch.tensors.at("latents").size(0), static_cast<int64_t>(batch.samples.size()));
        EXPECT_EQ(batch.tensors.at("prompt_embeds").size(0), static_cast<int64_t>(batch.samples.size()));
        for (const auto& s : batch.samples) {
            EXPECT_EQ(s.dataset_id, "held");
            EXPECT_EQ(s.bucket, batch.samples.front().bucket);
            ids.push_back(s.id);
        }
    }
    EXPECT_EQ(ids.size(), 3u);
    // The same set, in the same order, every call; max_samples and batch_size are honoured.
    std::vector<std::string> again;
    for (const auto& batch : b.eval_batches(0, 1)) {
        EXPECT_EQ(batch.samples.size(), 1u);
        again.push_back(batch.samples.front().id);
    }
    EXPECT_EQ(again, ids);
    size_t two = 0;
    for (const auto& batch : b.eval_batches(2, 4)) two += batch.samples.size();
    EXPECT_EQ(two, 2u);
    // Without eval datasets there is nothing to evaluate on.
    dl::LocalDataBackend plain;
    plain.open(request(dir.path, json::array({video_entry("train", "v"), text_entry()})));
    plain.prepare(&enc);
    EXPECT_TRUE(plain.eval_batches(0, 4).empty());
}

TEST(DataBackendTest, ConditioningImageEmbedsDatasetHoldsTheImageEmbeddings) {
    // SimpleTuner's Wan 2.1 I2V layout: the video dataset names a conditioning_image_embeds dataset;
    // the encoder's image_embeds are cached under its cache_dir/<video id>/, the latents without them.
    TempDir dir("backend-embeds");
    for (int i = 0; i < 2; ++i)
        st_test::make_clip(dir.path / "v" / ("c" + std::to_string(i) + ".mp4"), 96, 64, 10, 1.0);
    json video = video_entry("clips", "v");
    video["conditioning_image_embeds"] = "clip-embeds";
    const json embeds = {
        {"id", "clip-embeds"}, {"dataset_type", "conditioning_image_embeds"}, {"cache_dir", "cache/embeds"}};
    st_test::FakeEncoders enc;
    enc.image_embeds = true;
    auto open = [&](dl::LocalDataBackend& b) {
        b.open(
            request(dir.path, json::array({video, embeds, text_entry()}), {{"compress_disk_cache", false}}));
        b.prepare(&enc);
    };
    dl::LocalDataBackend b;
    open(b);
    ASSERT_EQ(enc.video_batches.size(), 1u);
    const fs::path embeds_dir = dir.path / "cache" / "embeds" / "clips";
    for (int i = 0; i < 2; ++i) {
        const fs::path e = embeds_dir / ("c" + std::to_string(i) + ".mp4.safetensors");
        ASSERT_TRUE(fs::exists(e)) << e;
        EXPECT_NE(st_test::read_text(e).find("image_embeds"), std::string::npos);
        const fs::path lat = b.sample_cache(static_cast<size_t>(i)).latent_file;
        EXPECT_EQ(st_test::read_text(lat).find("\"image_embeds\""), std::string::npos) << lat;
    }
    b.start_epoch(0);
    auto batch = b.next_batch(2);
    ASSERT_TRUE(batch);
    ASSERT_TRUE(batch->tensors.count("image_embeds"));
    EXPECT_EQ(batch->tensors.at("image_embeds").size(0), 2);

    dl::LocalDataBackend again;  // everything cached: nothing encoded
    open(again);
    EXPECT_EQ(enc.video_batches.size(), 1u);
    fs::remove(embeds_dir / "c1.mp4.safetensors");  // a lost embedding rebuilds its sample
    dl::LocalDataBackend rebuilt;
    open(rebuilt);
    ASSERT_EQ(enc.video_batches.size(), 2u);
    EXPECT_EQ(enc.video_batches.back(), 1);
    EXPECT_TRUE(fs::exists(embeds_dir / "c1.mp4.safetensors"));

    // A model without image embeddings (T2V) with the same config: cached once, then reused.
    enc.image_embeds = false;
    enc.identity = "fake-encoders-t2v";
    dl::LocalDataBackend t2v;
    open(t2v);
    const size_t encoded = enc.video_batches.size();
    dl::LocalDataBackend t2v_again;
    open(t2v_again);
    EXPECT_EQ(enc.video_batches.size(), encoded);

    // The link must name a conditioning_image_embeds dataset.
    json bad = video;
    bad["conditioning_image_embeds"] = "text";
    dl::LocalDataBackend wrong;
    try {
        wrong.open(request(dir.path, json::array({bad, embeds, text_entry()})));
        FAIL() << "a link to a text_embeds dataset was accepted";
    } catch (const st::Error& e) {
        EXPECT_NE(e.message().find("expected 'conditioning_image_embeds'"), std::string::npos) << e.message();
    }
}

TEST(DataBackendTest, SamplerResumesExactlyAndTooSmallDatasetsExplainRepeats) {
    TempDir dir("backend-sampler");
    const fs::path v = dir.path / "v";
    for (int i = 0; i < 5; ++i) st_test::make_clip(v / ("s" + std::to_string(i) + ".mp4"), 96, 64, 10, 1.0);
    auto entry = video_entry("s", "v");
    entry["repeats"] = 1;
    st_test::FakeEncoders enc;
    dl::LocalDataBackend a;
    a.open(request(dir.path, json::array({entry, text_entry()}), {{"train_batch_size", 2}}));
    a.prepare(&enc);
    EXPECT_EQ(a.batches_per_epoch(2), 5);  // 5 samples x 2 passes / 2
    a.start_epoch(3);
    a.next_batch(2);
    a.next_batch(2);
    const json saved = a.state();
    std::vector<std::string> expected;
    while (auto b = a.next_batch(2))
        for (const auto& s : b->samples) expected.push_back(s.id + "|" + s.caption);
    dl::LocalDataBackend r;
    r.open(request(dir.path, json::array({entry, text_entry()}), {{"train_batch_size", 2}}));
    r.prepare(&enc);
    r.restore(saved);
    std::vector<std::string> got;
    while (auto b = r.next_batch(2))
        for (const auto& s : b->samples) got.push_back(s.id + "|" + s.caption);
    EXPECT_EQ(got, expected);
    EXPECT_EQ(expected.size(), 6u);

    // 5 samples, batch 4 x accumulation 2 = 8 > 5: SimpleTuner's advice about repeats.
    dl::LocalDataBackend small;
    auto e0 = video_entry("s", "v");
    small.open(request(dir.path, json::array({e0, text_entry()}),
                       {{"train_batch_size", 4}, {"gradient_accumulation_steps", 2}}));
    try {
        small.prepare(&enc);
        FAIL() << "expected a too-small dataset error";
    } catch (const st::Error& e) {
        EXPECT_NE(e.message().find("repeats"), std::string::npos) << e.message();
        EXPECT_NE(e.message().find("\"repeats\": 1"), std::string::npos) << e.message();
    }
}

TEST(DataBackendTest, S2VAudioWindowMatchesTheVideoFrames) {
    TempDir dir("backend-s2v");
    const fs::path v = dir.path / "v";
    fs::create_directories(v);
    // 3 s clip at 10 fps; audio = 0.1 * t ramp, so the window start is readable from its samples.
    st_test::ffmpeg(
        "-f lavfi -i testsrc=size=96x64:rate=10:duration=3 -f lavfi -i \"aevalsrc='0.1*t':s=16000:d=3\" "
        "-c:v libx264 -preset ultrafast -c:a pcm_s16le '" +
        (v / "talk.mkv").string() + "'");
    st_test::make_clip(v / "silent.mp4", 96, 64, 10, 3.0);  // no audio
    st_test::ffmpeg(
        "-f lavfi -i testsrc=size=96x64:rate=10:duration=3 -f lavfi -i sine=duration=1 "
        "-c:v libx264 -preset ultrafast -c:a aac '" +
        (v / "short_audio.mp4").string() + "'");
    auto entry = video_entry("talk", "v", 9);
    entry["audio"] = {{"auto_split", true}, {"truncation_mode", "end"}};
    st_test::FakeEncoders enc;
    dl::LocalDataBackend b;
    b.open(request(dir.path, json::array({entry, text_entry()}), {{"disable_bucket_pruning", true}},
                   {st::sdk::MediaKind::audio}));
    const auto summary = b.prepare(&enc);
    EXPECT_NE(reason_for(b.skipped(), "silent.mp4").find("allow_zero_audio"), std::string::npos);
    EXPECT_NE(reason_for(b.skipped(), "short_audio.mp4").find("audio covers only"), std::string::npos);
    ASSERT_EQ(b.samples().size(), 1u);
    const auto& s = b.samples()[0];
    EXPECT_EQ(s.first_frame, 21);  // truncation_mode end: the last 9 of 30 frames
    ASSERT_EQ(enc.waveforms.size(), 1u);
    const at::Tensor w = enc.waveforms[0][0];
    EXPECT_EQ(w.size(0), 14400);                  // 9 frames / 10 fps * 16 kHz
    EXPECT_NEAR(w[0].item<float>(), 0.21, 0.01);  // starts at 2.1 s, not at 0
    EXPECT_EQ(summary.details["datasets"]["talk"]["s2v_datasets"][0], "talk_audio");
    b.start_epoch(0);
    auto batch = b.next_batch(1);
    ASSERT_TRUE(batch);
    EXPECT_EQ(batch->tensors.at("audio_features").sizes(), (std::vector<int64_t>{1, 2, 9}));

    // allow_zero_audio + short_audio pad keep both other clips.
    entry["audio"] = {
        {"auto_split", true}, {"allow_zero_audio", true}, {"short_audio", "pad"}, {"truncation_mode", "end"}};
    dl::LocalDataBackend z;
    z.open(request(dir.path, json::array({entry, text_entry()}), {{"disable_bucket_pruning", true}},
                   {st::sdk::MediaKind::audio}));
    const auto zs = z.prepare(&enc);
    EXPECT_EQ(zs.samples, 3);
    EXPECT_EQ(zs.details["datasets"]["talk"]["audio"]["zero_audio"], 1);
    EXPECT_EQ(zs.details["datasets"]["talk"]["audio"]["padded"], 1);
}

TEST(DataBackendTest, ManualAudioDatasetMatchedByStem) {
    TempDir dir("backend-manual-audio");
    st_test::make_clip(dir.path / "v" / "hello.mp4", 96, 64, 10, 1.0);
    st_test::make_clip(dir.path / "v" / "nomatch.mp4", 96, 64, 10, 1.0);
    fs::create_directories(dir.path / "a");
    st_test::ffmpeg("-f lavfi -i \"aevalsrc='0.1*t':s=22050:d=2\" '" +
                    (dir.path / "a" / "hello.flac").string() + "'");
    auto entry = video_entry("v", "v", 5);
    entry["s2v_datasets"] = {"aud"};
    const json aud = {{"id", "aud"}, {"dataset_type", "audio"}, {"instance_data_dir", "a"}};
    st_test::FakeEncoders enc;
    dl::LocalDataBackend b;
    b.open(request(dir.path, json::array({entry, aud, text_entry()}), {{"disable_bucket_pruning", true}}));
    b.prepare(&enc);
    ASSERT_EQ(b.samples().size(), 1u);
    EXPECT_EQ(b.samples()[0].audio.source.filename(), "hello.flac");
    EXPECT_NE(reason_for(b.skipped(), "nomatch.mp4").find("no audio file with stem 'nomatch'"),
              std::string::npos);
    ASSERT_EQ(enc.waveforms.size(), 1u);
    EXPECT_EQ(enc.waveforms[0].size(1), 8000);  // 5 frames at 10 fps
}

TEST(DataBackendTest, AudioOnAModelWithoutAudioFailsBeforeAnyCaching) {
    TempDir dir("backend-audio-no-capability");
    st_test::make_clip(dir.path / "v" / "hello.mp4", 96, 64, 10, 1.0);
    fs::create_directories(dir.path / "a");
    st_test::ffmpeg("-f lavfi -i \"aevalsrc='0.1*t':s=16000:d=2\" '" +
                    (dir.path / "a" / "hello.flac").string() + "'");
    auto entry = video_entry("v", "v", 5);
    entry["s2v_datasets"] = {"aud"};
    const json aud = {{"id", "aud"}, {"dataset_type", "audio"}, {"instance_data_dir", "a"}};
    st_test::FakeEncoders enc;
    enc.audio = false;  // a text/video-only model
    dl::LocalDataBackend b;
    b.open(request(dir.path, json::array({entry, aud, text_entry()}), {{"disable_bucket_pruning", true}}));
    try {
        b.prepare(&enc);
        FAIL() << "audio on a model that takes none must fail";
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("dataset 'aud' has audio, but the model takes no audio"),
                  std::string::npos)
            << e.what();
    }
    EXPECT_TRUE(enc.video_batches.empty()) << "no latent was encoded before the error";
    EXPECT_TRUE(enc.text_batches.empty());
}

TEST(DataBackendTest, AnAudioBlockWhoseClipsHaveNoAudioFailsOnTheModelNotOnTheClips) {
    // A clip without an audio stream was skipped for it first; with every clip skipped no sample showed
    // the audio, and the error was "no usable sample ... S2V needs audio" instead of the model's.
    TempDir dir("backend-audio-block-no-capability");
    st_test::make_clip(dir.path / "v" / "silent.mp4", 96, 64, 10, 1.0);
    auto entry = video_entry("v", "v", 5);
    entry["audio"] = {{"auto_split", true}};
    st_test::FakeEncoders enc;
    enc.audio = false;
    dl::LocalDataBackend b;
    b.open(request(dir.path, json::array({entry, text_entry()}), {{"disable_bucket_pruning", true}}));
    try {
        b.prepare(&enc);
        FAIL() << "an audio block on a model that takes no audio must fail";
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("dataset 'v_audio' has audio, but the model takes no audio"),
                  std::string::npos)
            << e.what();
    }
    EXPECT_TRUE(b.skipped().empty()) << "refused before discovery";
    EXPECT_TRUE(enc.video_batches.empty());
}

namespace {

// A model whose buckets follow its own alignment (st/bucket_alignment.h), as SimpleTuner's Wan (32,
// required) and Sana Video (64, a default the user may change) set aspect_bucket_alignment.
class AligningEncoders : public st_test::FakeEncoders, public st::sdk::BucketAlignment {
  public:
    AligningEncoders(int alignment, bool required) : alignment_(alignment), required_(required) {
        audio = false;
    }
    st::sdk::Capability* capability(std::string_view id) override {
        if (id == st::sdk::BucketAlignment::kId) return static_cast<st::sdk::BucketAlignment*>(this);
        return FakeEncoders::capability(id);
    }
    int bucket_alignment() const override { return alignment_; }
    bool bucket_alignment_required() const override { return required_; }

  private:
    int alignment_;
    bool required_;
};

std::string bucket_of(const fs::path& root, const json& config, st::sdk::Encoders& enc) {
    dl::LocalDataBackend b;
    b.open(request(root, json::array({video_entry("clips", "v"), text_entry()}), config));
    b.prepare(&enc);
    return b.samples().empty() ? std::string("none") : b.samples()[0].bucket;
}

}  // namespace

// #23: buckets as SimpleTuner computes them for each model (96x64 clips at 64 pixel_area: 80x48 at
// 16 px, 64x64 at 32 px).
TEST(DataBackendTest, TheModelsBucketAlignmentAppliesAsInSimpleTuner) {
    TempDir dir("backend-alignment");
    st_test::make_clip(dir.path / "v" / "a.mp4", 96, 64, 10, 1.0);
    const json pruning_off = {{"disable_bucket_pruning", true}};
    st_test::FakeEncoders plain;
    EXPECT_EQ(bucket_of(dir.path, pruning_off, plain), "80x48@9");  // the spatial multiple, 16
    AligningEncoders wan(32, true);
    EXPECT_EQ(bucket_of(dir.path, pruning_off, wan), "64x64@9");
    // Required: the user's value is overridden (SimpleTuner warns and does the same).
    json user16 = pruning_off;
    user16["aspect_bucket_alignment"] = 16;
    EXPECT_EQ(bucket_of(dir.path, user16, wan), "64x64@9");
    // A default only: the user's value wins.
    AligningEncoders sana(32, false);
    EXPECT_EQ(bucket_of(dir.path, pruning_off, sana), "64x64@9");
    EXPECT_EQ(bucket_of(dir.path, user16, sana), "80x48@9");
}
