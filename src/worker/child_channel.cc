#include "worker/child_channel.h"

namespace taskmill::worker {

namespace {

std::string Line(const nlohmann::json& j) {
  // A task's result may hold invalid UTF-8 (from a C string): replaced, so
  // that the outcome still arrives.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace

std::string EncodeProgress(const nlohmann::json& report) {
  return Line(nlohmann::json{{"progress", report}});
}

std::string EncodeOutcome(const Outcome& outcome) {
  return Line(nlohmann::json{{"outcome",
                              {{"state", TaskStateName(outcome.state)},
                               {"result", outcome.result},
                               {"error", outcome.error}}}});
}

void ChildChannelReader::Append(std::string_view bytes) { buffer_.append(bytes); }

std::optional<ChildMessage> ChildChannelReader::Next() {
  for (;;) {
    size_t end = buffer_.find('\n', scanned_);
    if (end == std::string::npos) {
      scanned_ = buffer_.size();
      return std::nullopt;
    }
    auto j = nlohmann::json::parse(std::string_view(buffer_).substr(0, end), nullptr, false);
    buffer_.erase(0, end + 1);
    scanned_ = 0;
    if (!j.is_object()) {
      ++malformed_;
      continue;
    }
    ChildMessage m;
    if (auto p = j.find("progress"); p != j.end() && p->is_object()) {
      m.kind = ChildMessage::Kind::kProgress;
      m.progress = std::move(*p);
      return m;
    }
    if (auto o = j.find("outcome"); o != j.end() && o->is_object()) {
      auto state = o->contains("state") && (*o)["state"].is_string()
                       ? ParseTaskState((*o)["state"].get<std::string>())
                       : std::nullopt;
      if (!state || !IsFinal(*state)) {
        ++malformed_;
        continue;
      }
      m.kind = ChildMessage::Kind::kOutcome;
      m.outcome.state = *state;
      m.outcome.result = o->value("result", nlohmann::json());
      m.outcome.error = o->value("error", nlohmann::json());
      return m;
    }
    ++malformed_;
  }
}

}  // namespace taskmill::worker
