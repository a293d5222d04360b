#include "io/memory.h"

namespace starling::mem {

Slot g_slots[kSlots];
thread_local Slot* t_slot __attribute__((tls_model("initial-exec"))) = &g_slots[kSharedSlot];

int64_t total(unsigned used_slots) {
  int64_t sum = g_slots[kSharedSlot].bytes.load(std::memory_order_relaxed);
  for (unsigned i = 0; i < used_slots && i < kSharedSlot; i++) sum += g_slots[i].bytes.load(std::memory_order_relaxed);
  return sum;
}

}  // namespace starling::mem
