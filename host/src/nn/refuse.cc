// How Nimbus refuses an allocation inside ONNX Runtime.
//
// ONNX Runtime dereferences what a registered allocator returns without a
// null check, so a refusal must be the C++ exception its own allocator
// throws when memory runs out: the run then fails with an error status
// and every frame in between cleans up. Rust cannot throw one; this does.
#include <new>

extern "C" [[noreturn]] void nimbus_refuse_allocation() { throw std::bad_alloc(); }
