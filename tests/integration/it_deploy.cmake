# SPDX-License-Identifier: MIT
# deploy/compose.yaml's topology without containers (issue 9 item 5): the
# test PostgreSQL, three nodes run with compose.yaml's command and
# environment, Debian's nginx with deploy/nginx.conf in front, loopback only.
# See deploy_topology_test.py.
find_program(IMS_PYTHON3 python3)
find_program(IMS_NGINX nginx PATHS /usr/sbin /sbin)
if(TARGET imgsearch AND IMS_PYTHON3 AND COMMAND ims_pg_test)
  if(NOT IMS_NGINX)
    message(WARNING "nginx not found: it_deploy_topology will fail (scripts/deps.sh test installs it)")
    set(IMS_NGINX nginx)
  endif()
  add_test(NAME it_deploy_topology
           COMMAND ${IMS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/deploy_topology_test.py
                   $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR})
  set_tests_properties(it_deploy_topology PROPERTIES LABELS integration TIMEOUT 300
                       ENVIRONMENT "IMS_NGINX=${IMS_NGINX}")
  ims_pg_test(it_deploy_topology)
endif()
# deploy/Dockerfile read against scripts/deps.sh, the install rules and the
# built binary's shared libraries (no container engine needed).
if(TARGET imgsearch AND IMS_PYTHON3)
  add_test(NAME it_deploy_dockerfile
           COMMAND ${IMS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/dockerfile_check.py
                   $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR} ${CMAKE_C_COMPILER_ID})
  set_tests_properties(it_deploy_dockerfile PROPERTIES LABELS integration TIMEOUT 60)
endif()
