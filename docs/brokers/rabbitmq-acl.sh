#!/bin/sh
# Per-node access control for RabbitMQ's MQTT plugin. Tested by tests/test_acl_e2e.py.
# Usage: rabbitmq-acl.sh USER PASSWORD [oms]   (USER = the node id, or the OMS's user)
# MQTT topics are AMQP routing keys on amq.topic ('/' -> '.', '+' -> '*'); {username} in a
# topic permission is the connecting user. RABBITMQCTL overrides the rabbitmqctl command.
set -eu
ctl=${RABBITMQCTL:-rabbitmqctl}
user=$1 password=$2 role=${3:-node}
$ctl add_user "$user" "$password" >/dev/null 2>&1 || $ctl change_password "$user" "$password"
# Resources: its own session queue (mqtt-subscription-<client id>qos0/1) and amq.topic.
$ctl set_permissions -p / "$user" '^mqtt-subscription-.*' '^(amq\.topic|mqtt-subscription-.*)$' '^(amq\.topic|mqtt-subscription-.*)$'
if [ "$role" = oms ]; then
  $ctl set_topic_permissions -p / "$user" amq.topic '^wh\.v1\.' '^wh\.v1\.'
else
  $ctl set_topic_permissions -p / "$user" amq.topic \
    '^wh\.v1\.[^.]+\.{username}\.(evt\.[^.]+|state)$' \
    '^wh\.v1\.[^.]+\.({username}\.(cmd\.[^.*#]+|cmd\.\*|ack)|_site\.cmd\.rebirth)$'
fi
