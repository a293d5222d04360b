#include "pubsub/subject.h"

#include "io/memory.h"
#include "pubsub/permissions.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace starling {

namespace {

// First growth of a subscriber's list beyond its inline slot.
constexpr uint32_t kFirstListCap = 4;
// First capacity of a subject's local list: one, because most subjects of the capacity workloads (W1, W3,
// W4) have exactly one subscriber; a larger first block cost 48 bytes per idle connection there.
constexpr uint32_t kFirstSubjectListCap = 1;
// A shard's table starts small (64 shards x 16 slots = 8 KiB) and doubles at 50% load, which keeps
// linear probes short.
constexpr size_t kFirstShardSlots = 16;

// A block of n bytes holding the first `keep` bytes of old (old_n bytes, freed). Throws std::bad_alloc
// (old untouched).
void* regrow(void* old, size_t old_n, size_t keep, size_t n) {
  void* p = mem::uncharged_block_alloc(n);
  if (!p) throw std::bad_alloc();
  if (keep) std::memcpy(p, old, keep);
  if (old) mem::uncharged_block_free(old, old_n);
  return p;
}

size_t subject_bytes(unsigned nworkgroups, size_t name_len) {
  return sizeof(Subject) + nworkgroups * sizeof(SubList) + name_len;
}

}  // namespace

Subscriber::~Subscriber() {
  if (subs != &one) mem::uncharged_block_free(subs, capsubs * sizeof(SubSlot));
  if (perms) perms->unref();
}

int Subscriber::find(const Subject* s) const {
  for (uint32_t i = 0; i < nsubs; i++)
    if (subs[i].subject == s) return static_cast<int>(i);
  return -1;
}

void Subject::unref() {
  if (refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  for (unsigned w = 0; w < nworkgroups; w++) mem::uncharged_block_free(local(w).items, local(w).cap * sizeof(SubRef));
  const size_t bytes = subject_bytes(nworkgroups, name_len);
  this->~Subject();
  mem::uncharged_block_free(this, bytes);
}

size_t format_epoch(uint64_t epoch, char* out) {
  char tmp[16];
  size_t n = 0;
  do {
    unsigned d = static_cast<unsigned>(epoch % 36);
    tmp[n++] = static_cast<char>(d < 10 ? '0' + d : 'a' + d - 10);
    epoch /= 36;
  } while (epoch);
  for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
  return n;
}

void link(Subscriber* who, Subject* subject, unsigned wg, uint32_t conflate_ms) {
  SubList& list = subject->local(wg);
  if (list.size == list.cap) {
    uint32_t cap = list.cap ? list.cap * 2 : kFirstSubjectListCap;
    list.items = static_cast<SubRef*>(regrow(list.items, list.cap * sizeof(SubRef), list.size * sizeof(SubRef), cap * sizeof(SubRef)));
    list.cap = cap;
  }
  if (who->nsubs == who->capsubs) {
    uint32_t cap = who->capsubs < kFirstListCap ? kFirstListCap : who->capsubs * 2;
    SubSlot* grown = static_cast<SubSlot*>(mem::uncharged_block_alloc(cap * sizeof(SubSlot)));
    if (!grown) throw std::bad_alloc();
    std::memcpy(grown, who->subs, who->nsubs * sizeof(SubSlot));
    if (who->subs != &who->one) mem::uncharged_block_free(who->subs, who->capsubs * sizeof(SubSlot));
    who->subs = grown;
    who->capsubs = cap;
  }
  list.items[list.size] = SubRef{who, who->nsubs, conflate_ms};
  who->subs[who->nsubs] = SubSlot{subject, list.size};
  list.size++;
  who->nsubs++;
}

Subject* unlink(Subscriber* who, uint32_t k, unsigned wg) {
  SubSlot gone = who->subs[k];
  Subject* subject = gone.subject;
  SubList& list = subject->local(wg);

  // Remove from the subject's list: move its last entry into the hole and repoint that subscriber.
  if (gone.index != list.size - 1) {
    SubRef last = list.items[list.size - 1];
    list.items[gone.index] = last;
    last.who->subs[last.slot].index = gone.index;
  }
  list.size--;

  // Remove from the subscriber's list the same way.
  if (k != who->nsubs - 1) {
    SubSlot tail = who->subs[who->nsubs - 1];
    who->subs[k] = tail;
    tail.subject->local(wg).items[tail.index].slot = k;
  }
  who->nsubs--;
  return subject;
}

uint64_t hash_subject(std::string_view name) {
  // FNV-1a, then a final avalanche so that every bit depends on every byte (the registry keys on the low 32 bits,
  // the home is the whole hash modulo the workgroups).
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h;
}

Registry::Registry(unsigned nworkgroups, uint64_t epoch_base) : nworkgroups_(nworkgroups), next_epoch_(epoch_base) {
  for (Shard& sh : shards_) sh.slots.assign(kFirstShardSlots, nullptr);
}

Registry::~Registry() {
  for (Shard& sh : shards_)
    for (Subject* s : sh.slots)
      if (s) s->unref();
}

Subject** Registry::probe(Shard& sh, uint32_t hash, std::string_view name) {
  size_t mask = sh.slots.size() - 1;
  for (size_t i = hash & mask;; i = (i + 1) & mask) {
    Subject*& slot = sh.slots[i];
    if (!slot || (slot->hash == hash && slot->name() == name)) return &slot;
  }
}

void Registry::grow(Shard& sh) {
  std::vector<Subject*> old(sh.slots.size() * 2, nullptr);
  old.swap(sh.slots);
  for (Subject* s : old)
    if (s) *probe(sh, s->hash, s->name()) = s;
}

void Registry::erase(Shard& sh, Subject* s) {
  // Backward-shift deletion keeps every probe chain unbroken without tombstones.
  Subject** at = probe(sh, s->hash, s->name());
  if (*at != s) return;
  size_t mask = sh.slots.size() - 1;
  size_t hole = static_cast<size_t>(at - sh.slots.data());
  sh.slots[hole] = nullptr;
  for (size_t i = (hole + 1) & mask; sh.slots[i]; i = (i + 1) & mask) {
    size_t want = sh.slots[i]->hash & mask;
    // Move the entry into the hole if its home slot is not in the (hole, i] range (cyclically).
    bool reachable = hole <= i ? (want <= hole || want > i) : (want <= hole && want > i);
    if (reachable) {
      sh.slots[hole] = sh.slots[i];
      sh.slots[i] = nullptr;
      hole = i;
    }
  }
  sh.used--;
  s->erased = true;
}

Subject* Registry::create(std::string_view name, uint32_t hash, unsigned home) {
  void* block = mem::uncharged_block_alloc(subject_bytes(nworkgroups_, name.size()));
  if (!block) throw std::bad_alloc();
  Subject* s = new (block) Subject();
  s->refs.store(1, std::memory_order_relaxed);  // the registry's reference
  s->interest.store(0, std::memory_order_relaxed);
  s->seq = 0;
  s->cache = nullptr;
  s->has_snapshot.store(false, std::memory_order_relaxed);
  s->synced.store(false, std::memory_order_relaxed);
  s->engine_known = false;
  s->held = false;
  s->erased = false;
  s->epoch = next_epoch_.fetch_add(1, std::memory_order_relaxed);
  s->hash = hash;
  s->home = static_cast<uint8_t>(home);
  s->nworkgroups = static_cast<uint8_t>(nworkgroups_);
  s->name_len = static_cast<uint8_t>(name.size());
  for (unsigned w = 0; w < nworkgroups_; w++) new (&s->local(w)) SubList();
  std::memcpy(reinterpret_cast<char*>(s->lists() + nworkgroups_), name.data(), name.size());
  return s;
}

Subject* Registry::find_or_create(Shard& sh, uint32_t hash, std::string_view name, unsigned home) {
  Subject** slot = probe(sh, hash, name);
  if (!*slot) {
    if ((sh.used + 1) * 2 > sh.slots.size()) {
      grow(sh);
      slot = probe(sh, hash, name);
    }
    *slot = create(name, hash, home);
    sh.used++;
    count_.fetch_add(1, std::memory_order_relaxed);
  }
  return *slot;
}

Subject* Registry::acquire(std::string_view name, unsigned wg, bool* first) {
  const uint32_t hash = key_of(name);
  Shard& sh = shard_of(hash);
  std::lock_guard<std::mutex> guard(sh.lock);
  Subject* s = find_or_create(sh, hash, name, wg);
  const uint64_t was = s->interest.fetch_or(uint64_t{1} << wg, std::memory_order_release);
  if (first) *first = !(was & (uint64_t{1} << wg));
  return s;
}

void Registry::release(Subject* s, unsigned wg) {
  Shard& sh = shard_of(s->hash);
  {
    std::lock_guard<std::mutex> guard(sh.lock);
    uint64_t left = s->interest.fetch_and(~(uint64_t{1} << wg), std::memory_order_acq_rel) & ~(uint64_t{1} << wg);
    if (left || s->held) return;
    erase(sh, s);
    count_.fetch_sub(1, std::memory_order_relaxed);
  }
  s->unref();
}

Subject* Registry::find_or_create_ref(std::string_view name, unsigned home) {
  const uint32_t hash = key_of(name);
  Shard& sh = shard_of(hash);
  std::lock_guard<std::mutex> guard(sh.lock);
  Subject* s = find_or_create(sh, hash, name, home);
  s->ref();
  return s;
}

bool Registry::hold(Subject* s) {
  std::lock_guard<std::mutex> guard(shard_of(s->hash).lock);
  if (s->erased) return false;
  s->held = true;
  return true;
}

void Registry::unhold(Subject* s) {
  Shard& sh = shard_of(s->hash);
  {
    std::lock_guard<std::mutex> guard(sh.lock);
    s->held = false;
    if (s->erased || s->interest.load(std::memory_order_acquire)) return;
    erase(sh, s);
    count_.fetch_sub(1, std::memory_order_relaxed);
  }
  s->unref();
}

void Registry::forget_if_idle(Subject* s) {
  Shard& sh = shard_of(s->hash);
  {
    std::lock_guard<std::mutex> guard(sh.lock);
    if (s->erased || s->held || s->interest.load(std::memory_order_acquire)) return;
    erase(sh, s);
    count_.fetch_sub(1, std::memory_order_relaxed);
  }
  s->unref();
}

Subject* Registry::find_ref(std::string_view name) {
  const uint32_t hash = key_of(name);
  Shard& sh = shard_of(hash);
  std::lock_guard<std::mutex> guard(sh.lock);
  Subject* s = *probe(sh, hash, name);
  if (s) s->ref();
  return s;
}

}  // namespace starling
