# Helpers shared by every folder's CMakeLists.txt.

# CHOIR_SANITIZE on one of Choir's targets (ours and our generated protobuf code, never the
# prebuilt Debian libraries). With thread, __SANITIZE_THREAD__ is undefined again: protobuf's
# and abseil's headers change class layouts under it (MapFieldBase gains members), which would
# no longer match the uninstrumented libprotobuf and crash; TSan still instruments every
# access, atomic and pthread call.
function(choir_sanitize target)
  if(CHOIR_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=${CHOIR_SANITIZE} -fno-omit-frame-pointer)
    if(CHOIR_SANITIZE STREQUAL "thread")
      target_compile_options(${target} PRIVATE -U__SANITIZE_THREAD__)
    endif()
    target_link_options(${target} PRIVATE -fsanitize=${CHOIR_SANITIZE})
  endif()
endfunction()

# Warnings (and sanitizers) on Choir's own targets only, never on third-party code.
function(choir_target_defaults target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>)
  if(CHOIR_WERROR)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
  endif()
  choir_sanitize(${target})
  target_include_directories(${target} PUBLIC
    ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR}/generated ${PROJECT_BINARY_DIR})
endfunction()

function(choir_library name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SRCS})
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
  choir_target_defaults(${name})
endfunction()

# choir_test(NAME SRCS a.cc b.cc DEPS lib... [LABELS slow|mpi|gpu] [TIMEOUT s])
# One gtest binary per call, registered with ctest under its labels ("fast" when none).
function(choir_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SRCS;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SRCS})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main)
  choir_target_defaults(${name})
  add_test(NAME ${name} COMMAND ${name})
  if(NOT ARG_LABELS)
    set(ARG_LABELS fast)
  endif()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT ${CHOIR_TEST_TIMEOUT})
  endif()
  set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT}
    ENVIRONMENT "CHOIR_SHARED_DATA=${PROJECT_SOURCE_DIR}/../shared/data;CHOIR_SOURCE_DIR=${PROJECT_SOURCE_DIR}")
endfunction()

# choir_proto_library(NAME PROTOS dir/x.proto ... [DEPS other_proto_lib...])
# Generates C++ for protos named relative to the source root, so that includes read
# "core/proto/job.pb.h" wherever the file lives.
function(choir_proto_library name)
  cmake_parse_arguments(ARG "" "" "PROTOS;DEPS" ${ARGN})
  set(srcs)
  foreach(proto ${ARG_PROTOS})
    file(RELATIVE_PATH rel ${PROJECT_SOURCE_DIR} ${CMAKE_CURRENT_SOURCE_DIR}/${proto})
    string(REGEX REPLACE "\\.proto$" "" base ${rel})
    add_custom_command(
      OUTPUT ${PROJECT_BINARY_DIR}/${base}.pb.cc ${PROJECT_BINARY_DIR}/${base}.pb.h
      COMMAND protobuf::protoc --proto_path=${PROJECT_SOURCE_DIR} --cpp_out=${PROJECT_BINARY_DIR} ${rel}
      DEPENDS ${PROJECT_SOURCE_DIR}/${rel} protobuf::protoc
      WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
      COMMENT "protoc ${rel}")
    list(APPEND srcs ${PROJECT_BINARY_DIR}/${base}.pb.cc)
  endforeach()
  add_library(${name} STATIC ${srcs})
  choir_sanitize(${name})
  target_include_directories(${name} PUBLIC ${PROJECT_BINARY_DIR} ${Protobuf_INCLUDE_DIRS})
  target_link_libraries(${name} PUBLIC ${Protobuf_LIBRARIES} ${ARG_DEPS})
endfunction()
