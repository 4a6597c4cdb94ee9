// Facts about this process and machine that reports and benchmarks print.
#ifndef CHOIR_CORE_SYSINFO_H_
#define CHOIR_CORE_SYSINFO_H_

#include <string>

namespace choir {

// Peak resident set size of this process so far, MiB (getrusage; includes mapped file pages).
double PeakRssMb();

// The CPU's model name from /proc/cpuinfo, or "unknown".
std::string CpuModel();

}  // namespace choir

#endif  // CHOIR_CORE_SYSINFO_H_
