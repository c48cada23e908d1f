#include "taskmill/client.h"

#include "pg/connection.h"
#include "service/task_service.h"
#include "store/migrate.h"
#include "store/task_store.h"

namespace taskmill {

class Client::Impl {
 public:
  explicit Impl(std::string url) : url_(std::move(url)) {}

  pg::Connection& Conn(Deadline deadline) {
    if (!conn_.ok()) conn_ = pg::Connection::Open(url_, deadline);
    return conn_;
  }

  std::string url_;
  pg::Connection conn_;
};

Result<Client> Client::Connect(const std::string& database_url, Deadline deadline) {
  auto impl = std::make_unique<Impl>(database_url);
  auto schema = store::CheckSchema(impl->Conn(deadline), deadline);
  if (!schema.ok()) return schema.error();
  return Client(std::move(impl));
}

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;
Client::~Client() = default;

Result<DispatchOutcome> Client::Dispatch(const DispatchRequest& request, Deadline deadline) {
  return service::Dispatch(impl_->Conn(deadline), request, std::nullopt, deadline);
}

Result<std::vector<std::string>> Client::DispatchMany(const std::vector<DispatchRequest>& requests,
                                                      Deadline deadline) {
  return service::DispatchMany(impl_->Conn(deadline), requests, deadline);
}

Result<TaskState> Client::Cancel(const std::string& task_id, Deadline deadline) {
  return service::Cancel(impl_->Conn(deadline), task_id, deadline);
}

Result<int> Client::CancelGroup(const std::string& group_id, Deadline deadline) {
  return service::CancelGroup(impl_->Conn(deadline), group_id, deadline);
}

Result<std::string> Client::CreateGroup(const std::string& description, Deadline deadline) {
  return store::CreateTaskGroup(impl_->Conn(deadline), description, deadline);
}

Result<Task> Client::Get(const std::string& task_id, Deadline deadline) {
  return store::GetTask(impl_->Conn(deadline), task_id, deadline);
}

std::vector<Task> Client::List(const std::vector<TaskState>& states, int limit, Deadline deadline) {
  store::TaskFilter filter;
  filter.states = states;
  filter.limit = limit;
  return store::ListTasks(impl_->Conn(deadline), filter, deadline);
}

}  // namespace taskmill
