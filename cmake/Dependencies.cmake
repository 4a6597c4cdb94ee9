# Third-party libraries, all from Debian 12 packages (see tools/setup.sh).
find_package(Threads REQUIRED)
find_package(absl CONFIG REQUIRED)
find_package(glog CONFIG REQUIRED)      # glog's CMake config, not a Find module
find_package(gflags CONFIG REQUIRED)
find_package(zstd CONFIG REQUIRED)
find_package(Protobuf REQUIRED)         # Debian's protobuf has no CMake config
find_package(nlohmann_json CONFIG REQUIRED)
find_package(Eigen3 3.3 CONFIG REQUIRED)  # header-only; vectorised element-wise math on CPU
find_package(GTest CONFIG REQUIRED)

if(TARGET zstd::libzstd_shared)
  set(CHOIR_ZSTD zstd::libzstd_shared)
else()
  set(CHOIR_ZSTD zstd::libzstd_static)
endif()
