// C++ face of liballocscope-context (allocscope_context.h): a scope guard that sets one
// attribute of the current thread's request context for its lifetime and restores the
// previous attributes when it goes out of scope, exceptions included.
//
//   allocscope::context_guard endpoint(0, "GET /reports/export");
#ifndef ALLOCSCOPE_CONTEXT_HPP
#define ALLOCSCOPE_CONTEXT_HPP

#include <cstring>
#include <string_view>

#include "allocscope_context.h"

namespace allocscope {

class context_guard {
public:
	context_guard(uint8_t key, std::string_view value) noexcept
	{
		ok_ = allocscope_context_push(&scope_, key, value.data(), value.size()) == 0;
	}
	~context_guard() { allocscope_context_pop(&scope_); }
	context_guard(const context_guard &) = delete;
	context_guard &operator=(const context_guard &) = delete;
	// Whether the attribute was set (false: out of room or key out of range).
	bool ok() const noexcept { return ok_; }

private:
	allocscope_context_scope scope_;
	bool ok_;
};

} // namespace allocscope

#endif
