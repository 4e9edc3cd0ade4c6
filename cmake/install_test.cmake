# Installs the build tree into a scratch prefix, then builds and runs tests/install against it,
# once through find_package(weft) and once through pkg-config (weft.pc).
# Arguments: -DBUILD_DIR= -DSOURCE_DIR= -DWORK_DIR= -DCXX=
file(REMOVE_RECURSE "${WORK_DIR}")
set(prefix "${WORK_DIR}/prefix")
execute_process(COMMAND ${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${prefix}"
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(rc)
  message(FATAL_ERROR "cmake --install failed: ${rc}")
endif()
foreach(f weft/weft.hpp weft/spsc.hpp weft/detail/layout.hpp weftConfig.cmake
          weftConfigVersion.cmake weftTargets.cmake weft.pc libweft_transport.a weft.conf)
  file(GLOB_RECURSE found "${prefix}/*/${f}")
  if(NOT found)
    message(FATAL_ERROR "the installed tree under ${prefix} lacks ${f}")
  endif()
endforeach()

execute_process(COMMAND ${CMAKE_COMMAND} -S "${SOURCE_DIR}/tests/install" -B "${WORK_DIR}/consumer"
                        -G Ninja -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_CXX_COMPILER=${CXX}
                RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "configuring the consumer against the installed package failed")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build "${WORK_DIR}/consumer" RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "building the consumer against the installed package failed")
endif()
execute_process(COMMAND "${WORK_DIR}/consumer/consumer" RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "the consumer built against the installed package failed: ${rc}")
endif()

# pkg-config: compile the same program with the flags weft.pc gives.
file(GLOB_RECURSE pc "${prefix}/*/weft.pc")
get_filename_component(pc_dir "${pc}" DIRECTORY)
set(ENV{PKG_CONFIG_PATH} "${pc_dir}")
execute_process(COMMAND pkg-config --cflags --libs --static weft OUTPUT_VARIABLE flags
                RESULT_VARIABLE rc OUTPUT_STRIP_TRAILING_WHITESPACE)
if(rc)
  message(FATAL_ERROR "pkg-config cannot read the installed weft.pc")
endif()
separate_arguments(flags UNIX_COMMAND "${flags}")
execute_process(COMMAND ${CXX} "${SOURCE_DIR}/tests/install/main.cpp" -o "${WORK_DIR}/pc-consumer"
                        ${flags} RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "building with pkg-config flags (${flags}) failed")
endif()
execute_process(COMMAND "${WORK_DIR}/pc-consumer" RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "the pkg-config consumer failed: ${rc}")
endif()
message(STATUS "installed package works through find_package and pkg-config")
